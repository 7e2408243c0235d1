import { useEffect, useId, useRef, useState, type SubmitEvent } from 'react';
import type { PoisonRecord, PoisonSummary } from '../api/types';
import { ConfirmDialog } from '../components/Dialog';
import { JsonBlock } from '../components/JsonBlock';
import { Pager, useCursorPager } from '../components/Pager';
import { ProblemAlert } from '../components/ProblemAlert';
import { Badge, Empty, Loading, Notice, Time } from '../components/Status';
import { useAction } from '../hooks/useAction';
import { usePoll } from '../hooks/usePoll';
import { href, navigate, useRoute } from '../router';
import { useApi, useCan } from '../session';
import { ScreenHeader } from './ScreenHeader';

export const POISON_PAGE_SIZE = 50;

interface Outcome {
  text: string;
  tone: 'ok' | 'warn';
}

export function Poison() {
  const api = useApi();
  const route = useRoute();
  const source = route.query.get('source') ?? '';
  const selected = route.query.get('record');
  const pager = useCursorPager();
  const [draft, setDraft] = useState(source);
  const [outcome, setOutcome] = useState<Outcome | null>(null);
  const sourceId = useId();

  const list = usePoll(
    (signal) => api.poisonList({ source, limit: POISON_PAGE_SIZE, cursor: pager.cursor }, signal),
    10_000,
    { key: `${source}|${pager.cursor ?? ''}` },
  );
  const records = list.data?.records ?? [];
  const knownSources = [...new Set(records.map((r) => r.source.name))].sort();

  const go = (q: { source?: string; record?: string | null }) =>
    navigate(href(['poison'], { source: q.source ?? source, record: q.record === undefined ? selected : q.record }));

  const applyFilter = (e: SubmitEvent) => {
    e.preventDefault();
    pager.reset();
    go({ source: draft.trim(), record: null });
  };

  return (
    <section aria-labelledby="poison-title">
      <ScreenHeader
        id="poison-title"
        title="Poison"
        updatedAt={list.updatedAt}
        onRefresh={list.refresh}
        actions={<a href={href(['audit'])}>Audit trail</a>}
      >
        Messages a consumer gave up on. Inspect one, then redrive it through its handler or purge it.
      </ScreenHeader>
      <form className="toolbar" onSubmit={applyFilter} role="search" aria-label="Poison records">
        <label htmlFor={sourceId}>Source</label>
        <input
          id={sourceId}
          list={`${sourceId}-list`}
          placeholder="all sources"
          value={draft}
          onChange={(e) => setDraft(e.target.value)}
        />
        <datalist id={`${sourceId}-list`}>
          {knownSources.map((s) => (
            <option key={s} value={s} />
          ))}
        </datalist>
        <button type="submit">Apply filter</button>
        {source !== '' && (
          <button
            type="button"
            onClick={() => {
              setDraft('');
              pager.reset();
              go({ source: '', record: null });
            }}
          >
            Clear
          </button>
        )}
      </form>
      {outcome && (
        <Notice tone={outcome.tone}>
          {outcome.text}{' '}
          <a href={href(['audit'])}>See the audit trail</a>
        </Notice>
      )}
      <ProblemAlert problem={list.error} />
      {list.loading && !list.data ? (
        <Loading what="poison records" />
      ) : records.length === 0 && !list.error ? (
        <Empty>{source ? `No poison records from ${source}` : 'No poison records'}</Empty>
      ) : records.length > 0 ? (
        <>
          <div className="table-wrap">
            <table>
              <caption className="visually-hidden">Poison records</caption>
              <thead>
                <tr>
                  <th scope="col">Time</th>
                  <th scope="col">Source</th>
                  <th scope="col">Consumer</th>
                  <th scope="col">Stream · seq</th>
                  <th scope="col">Subject</th>
                  <th scope="col">Error</th>
                  <th scope="col">Attempts</th>
                  <th scope="col">
                    <span className="visually-hidden">Actions</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {records.map((r) => (
                  <tr key={r.id} className={r.id === selected ? 'selected' : undefined}>
                    <td><Time value={r.time} /></td>
                    <td>
                      <Badge value={r.source.kind} /> {r.source.name}
                    </td>
                    <td><code>{r.consumer}</code></td>
                    <td>
                      <code>{r.stream}</code> · {r.sequence}
                    </td>
                    <td><code>{r.subject}</code></td>
                    <td className="failure">{r.error}</td>
                    <td className="num">{r.attempts}</td>
                    <td>
                      <button
                        type="button"
                        aria-label={`Inspect ${r.source.name} #${r.sequence}`}
                        aria-pressed={r.id === selected}
                        onClick={() => go({ record: r.id })}
                      >
                        Inspect
                      </button>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          <Pager
            label="Poison"
            page={pager.page}
            nextCursor={list.data?.next_cursor}
            onNext={pager.next}
            onPrev={pager.prev}
          />
        </>
      ) : null}
      {selected && (
        <PoisonInspect
          key={selected}
          id={selected}
          onClose={() => go({ record: null })}
          onDone={(o, gone) => {
            setOutcome(o);
            list.refresh();
            if (gone) go({ record: null });
          }}
        />
      )}
    </section>
  );
}

function PoisonInspect({
  id,
  onClose,
  onDone,
}: {
  id: string;
  onClose: () => void;
  onDone: (o: Outcome, gone: boolean) => void;
}) {
  const api = useApi();
  const canOperate = useCan('admin', 'operate');
  const record = usePoll((signal) => api.poison(id, signal), null, { key: id });
  const redrive = useAction(api.redrivePoison);
  const purge = useAction(api.purgePoison);
  const [confirmPurge, setConfirmPurge] = useState(false);
  const titleId = useId();
  const hintId = useId();
  const panel = useRef<HTMLElement>(null);
  const r = record.data;

  useEffect(() => {
    panel.current?.scrollIntoView({ block: 'start', behavior: 'smooth' });
  }, []);

  const doRedrive = async () => {
    const res = await redrive.run(id);
    if (!res) return;
    const text = `Redrive of ${describe(r, id)}: ${res.outcome.replace(/_/g, ' ')}${res.detail ? ` — ${res.detail}` : ''}`;
    if (res.outcome === 'failed') {
      onDone({ text, tone: 'warn' }, false);
      record.refresh();
    } else onDone({ text, tone: 'ok' }, true);
  };

  const doPurge = async () => {
    const res = await purge.run(id);
    setConfirmPurge(false);
    if (!res) return;
    onDone({ text: `Purge of ${describe(r, id)}: ${res.outcome.replace(/_/g, ' ')}`, tone: 'ok' }, true);
  };

  return (
    <aside ref={panel} className="panel" aria-labelledby={titleId}>
      <header className="card-header">
        <h2 id={titleId}>Poison record {r ? describe(r, id) : <code>{id}</code>}</h2>
        <button type="button" onClick={onClose}>
          Close
        </button>
      </header>
      <ProblemAlert problem={record.error} />
      <ProblemAlert problem={redrive.error} onDismiss={redrive.reset} />
      <ProblemAlert problem={purge.error} onDismiss={purge.reset} />
      {record.loading && !r ? (
        <Loading what="the record" />
      ) : r ? (
        <>
          <dl className="facts">
            <dt>Id</dt>
            <dd><code>{r.id}</code></dd>
            <dt>Source</dt>
            <dd>
              <Badge value={r.source.kind} /> {r.source.name}
            </dd>
            <dt>Consumer</dt>
            <dd><code>{r.consumer}</code></dd>
            <dt>Stream</dt>
            <dd>
              <code>{r.stream}</code> sequence {r.sequence}
            </dd>
            <dt>Subject</dt>
            <dd><code>{r.subject}</code></dd>
            <dt>Time</dt>
            <dd><Time value={r.time} /></dd>
            <dt>Attempts</dt>
            <dd>{r.attempts}</dd>
            <dt>Error</dt>
            <dd className="failure">{r.error}</dd>
          </dl>
          <h3>Headers</h3>
          {Object.keys(r.headers).length === 0 ? (
            <Empty>No headers</Empty>
          ) : (
            <table className="compact">
              <caption className="visually-hidden">Headers</caption>
              <thead>
                <tr>
                  <th scope="col">Header</th>
                  <th scope="col">Value</th>
                </tr>
              </thead>
              <tbody>
                {Object.entries(r.headers)
                  .sort(([a], [b]) => a.localeCompare(b))
                  .map(([k, v]) => (
                    <tr key={k}>
                      <th scope="row"><code>{k}</code></th>
                      <td><code>{v.join(', ')}</code></td>
                    </tr>
                  ))}
              </tbody>
            </table>
          )}
          <h3>Original payload</h3>
          {!r.message.available ? (
            <Empty>The stream no longer holds this message.</Empty>
          ) : typeof r.message.payload_text === 'string' ? (
            <pre className="json" aria-label="Payload" tabIndex={0}>
              <code>{r.message.payload_text}</code>
            </pre>
          ) : (
            <JsonBlock value={r.message.payload} label="Payload" />
          )}
          <div className="actions">
            <button type="button" className="primary" onClick={() => void doRedrive()} disabled={!canOperate || redrive.pending} aria-describedby={canOperate ? undefined : hintId}>
              {redrive.pending ? 'Redriving…' : 'Redrive'}
            </button>
            <button type="button" className="danger" onClick={() => setConfirmPurge(true)} disabled={!canOperate || purge.pending} aria-describedby={canOperate ? undefined : hintId}>
              Purge
            </button>
            {!canOperate && (
              <span id={hintId} className="muted small">
                Needs the right <code>admin:operate</code>.
              </span>
            )}
          </div>
        </>
      ) : null}
      {confirmPurge && (
        <ConfirmDialog
          title="Purge this poison record?"
          confirmLabel="Purge record"
          danger
          busy={purge.pending}
          onConfirm={() => void doPurge()}
          onCancel={() => setConfirmPurge(false)}
        >
          <p>
            The record of {describe(r, id)} is deleted; the message is not applied. This is audited and cannot be
            undone.
          </p>
        </ConfirmDialog>
      )}
    </aside>
  );
}

function describe(r: PoisonSummary | PoisonRecord | undefined, id: string): string {
  return r ? `${r.source.name} #${r.sequence}` : id;
}
