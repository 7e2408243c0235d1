import { useId, useState, type SubmitEvent } from 'react';
import { isRunnerStatus, type Instance, type InstanceStatusFilter, type InstanceVerb } from '../api/types';
import { PromptDialog } from '../components/Dialog';
import { JsonBlock } from '../components/JsonBlock';
import { Pager, useCursorPager } from '../components/Pager';
import { ProblemAlert } from '../components/ProblemAlert';
import { Badge, Empty, Loading, Notice, Time } from '../components/Status';
import { useAction } from '../hooks/useAction';
import { usePoll } from '../hooks/usePoll';
import { href, navigate, useRoute } from '../router';
import { useApi, useCan } from '../session';
import { ScreenHeader } from './ScreenHeader';

export const INSTANCE_PAGE_SIZE = 50;
const STATUSES: InstanceStatusFilter[] = ['running', 'completed', 'failed', 'paused'];

function instanceStatus(i: Instance): string {
  if (i.status === 'running' && i.cancel_requested) return 'cancelling';
  if (i.status === 'running' && i.paused) return 'paused';
  return i.status;
}

export function Workflows() {
  const api = useApi();
  const route = useRoute();
  const name = route.query.get('name') ?? '';
  const statusParam = route.query.get('status') ?? '';
  const status = (STATUSES as string[]).includes(statusParam) ? (statusParam as InstanceStatusFilter) : '';
  const pager = useCursorPager();
  const [typed, setTyped] = useState(name);
  const typedId = useId();

  // The workflow names the runners have enabled (needs runner:admin; else the name is typed).
  const runners = usePoll((signal) => api.runnerNodes(signal), null);
  const names = [
    ...new Set((runners.data?.nodes ?? []).filter(isRunnerStatus).flatMap((n) => n.enabled_workflows)),
  ].sort();
  const namesKnown = runners.data !== undefined && names.length > 0;
  const chosen = name !== '' ? name : namesKnown ? (names[0] ?? '') : '';

  const list = usePoll(
    (signal) =>
      chosen === ''
        ? Promise.resolve(null)
        : api.workflowInstances(chosen, { status, limit: INSTANCE_PAGE_SIZE, cursor: pager.cursor }, signal),
    pager.page === 1 ? 5000 : null,
    { key: `${chosen}|${status}|${pager.cursor ?? ''}` },
  );
  const instances = list.data?.instances ?? [];

  const go = (q: { name?: string; status?: string }) => {
    pager.reset();
    navigate(href(['workflows'], { name: q.name ?? chosen, status: q.status ?? status }), { replace: true });
  };

  return (
    <section aria-labelledby="workflows-title">
      <ScreenHeader id="workflows-title" title="Workflows" updatedAt={list.updatedAt} onRefresh={list.refresh}>
        Workflow instances by status; open one to inspect it and to pause, resume, cancel or retry it.
      </ScreenHeader>
      <div className="toolbar">
        {namesKnown ? (
          <label>
            Workflow{' '}
            <select value={chosen} onChange={(e) => go({ name: e.target.value })}>
              {[...new Set([...names, chosen])].filter(Boolean).map((n) => (
                <option key={n} value={n}>
                  {n}
                </option>
              ))}
            </select>
          </label>
        ) : (
          <form
            className="inline"
            onSubmit={(e: SubmitEvent) => {
              e.preventDefault();
              go({ name: typed.trim() });
            }}
          >
            <label htmlFor={typedId}>Workflow name</label>{' '}
            <input id={typedId} value={typed} onChange={(e) => setTyped(e.target.value)} placeholder="e.g. transfer" />{' '}
            <button type="submit">Show</button>
          </form>
        )}
        <label>
          Status{' '}
          <select value={status} onChange={(e) => go({ status: e.target.value })}>
            <option value="">Any status</option>
            {STATUSES.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </label>
      </div>
      {runners.loading && !runners.data && <Loading what="workflow names" />}
      {!namesKnown && runners.error && (
        <p className="muted small">
          The runners&apos; workflow list is not available to this token ({runners.error.title}); type a workflow name.
        </p>
      )}
      <ProblemAlert problem={list.error} />
      {chosen === '' ? (
        runners.loading ? null : <Empty>Pick a workflow</Empty>
      ) : list.loading && !list.data ? (
        <Loading what={`${chosen} instances`} />
      ) : instances.length === 0 && !list.error ? (
        <Empty>No {status ? `${status} ` : ''}instances of {chosen}</Empty>
      ) : instances.length > 0 ? (
        <>
          <div className="table-wrap">
            <table>
              <caption className="visually-hidden">Instances of {chosen}</caption>
              <thead>
                <tr>
                  <th scope="col">Instance</th>
                  <th scope="col">Status</th>
                  <th scope="col">Step</th>
                  <th scope="col">Pending</th>
                  <th scope="col">Timers</th>
                  <th scope="col">Failure</th>
                  <th scope="col">Created</th>
                  <th scope="col">Updated</th>
                </tr>
              </thead>
              <tbody>
                {instances.map((i) => (
                  <tr key={i.instance}>
                    <th scope="row">
                      <a href={href(['workflows', i.workflow || chosen, i.instance])}>{i.instance}</a>
                    </th>
                    <td><Badge value={instanceStatus(i)} /></td>
                    <td className="num">{i.step}</td>
                    <td className="num">{i.pending.length}</td>
                    <td className="num">{i.timers.length}</td>
                    <td className="failure">{i.failure ?? <span className="muted">—</span>}</td>
                    <td><Time value={i.created_at_ms} /></td>
                    <td><Time value={i.updated_at_ms} /></td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          <Pager
            label="Instances"
            page={pager.page}
            nextCursor={list.data?.next_cursor || null}
            onNext={pager.next}
            onPrev={pager.prev}
          />
        </>
      ) : null}
    </section>
  );
}

const VERB_DONE: Record<InstanceVerb, string> = {
  pause: 'Paused',
  resume: 'Resumed',
  cancel: 'Cancel requested',
  'retry-now': 'Retry requested',
};

export function InstanceDetail({ name, id }: { name: string; id: string }) {
  const api = useApi();
  const canOperate = useCan('workflows', `${name}:operate`);
  const poll = usePoll((signal) => api.workflowInstance(name, id, signal), 3000, { key: `${name}/${id}` });
  const verb = useAction((v: InstanceVerb, reason?: string) => api.operateInstance(name, id, v, reason));
  const [after, setAfter] = useState<{ instance: Instance; text: string } | null>(null);
  const [askReason, setAskReason] = useState(false);
  const hintId = useId();

  // The verb's answer until the next refresh is newer.
  const inst =
    after && (!poll.data || after.instance.updated_at_ms >= poll.data.updated_at_ms) ? after.instance : poll.data;
  const ended = inst ? inst.status !== 'running' : true;

  const run = async (v: InstanceVerb, reason?: string) => {
    setAfter(null);
    const res = await verb.run(v, reason);
    if (res) {
      setAfter({ instance: res, text: `${VERB_DONE[v]}: ${name} ${id}.` });
      poll.refresh();
    }
  };

  const disabledHint = canOperate ? undefined : hintId;
  return (
    <section aria-labelledby="instance-title">
      <ScreenHeader id="instance-title" title={`${name} / ${id}`} updatedAt={poll.updatedAt} onRefresh={poll.refresh}>
        <a href={href(['workflows'], { name })}>All {name} instances</a>
      </ScreenHeader>
      <ProblemAlert problem={poll.error} />
      <ProblemAlert problem={verb.error} onDismiss={verb.reset} />
      {after && <Notice>{after.text}</Notice>}
      {poll.loading && !inst ? (
        <Loading what="the instance" />
      ) : inst ? (
        <>
          <div className="actions" role="group" aria-label="Instance verbs">
            <button type="button" onClick={() => void run('pause')} disabled={!canOperate || verb.pending || ended || inst.paused} aria-describedby={disabledHint}>
              Pause
            </button>
            {/* An instance that ended while paused still holds its last events: resume publishes them. */}
            <button type="button" onClick={() => void run('resume')} disabled={!canOperate || verb.pending || !inst.paused} aria-describedby={disabledHint}>
              Resume
            </button>
            <button type="button" className="danger" onClick={() => setAskReason(true)} disabled={!canOperate || verb.pending || ended || inst.cancel_requested} aria-describedby={disabledHint}>
              Cancel…
            </button>
            <button type="button" onClick={() => void run('retry-now')} disabled={!canOperate || verb.pending || ended} aria-describedby={disabledHint}>
              Retry now
            </button>
            {!canOperate && (
              <span id={hintId} className="muted small">
                Needs the right <code>workflows:{name}:operate</code>.
              </span>
            )}
          </div>
          {ended && inst.paused && (
            <Notice tone="warn">
              This instance ended while paused: its last events (and any command of its last step) wait in its
              outbox until it is resumed.
            </Notice>
          )}
          <dl className="facts">
            <dt>Status</dt>
            <dd><Badge value={instanceStatus(inst)} /></dd>
            <dt>Step</dt>
            <dd>{inst.step}</dd>
            <dt>Paused</dt>
            <dd>{inst.paused ? 'yes' : 'no'}</dd>
            <dt>Cancel requested</dt>
            <dd>{inst.cancel_requested ? 'yes' : 'no'}</dd>
            <dt>Created</dt>
            <dd><Time value={inst.created_at_ms} /></dd>
            <dt>Updated</dt>
            <dd><Time value={inst.updated_at_ms} /></dd>
          </dl>
          {inst.failure && (
            <>
              <h2>Failure</h2>
              <p className="failure">{inst.failure}</p>
            </>
          )}
          <h2>State</h2>
          <JsonBlock value={inst.state} label="Instance state" />
          <h2>Pending commands</h2>
          {inst.pending.length === 0 ? (
            <Empty>No pending commands</Empty>
          ) : (
            <div className="table-wrap">
              <table>
                <caption className="visually-hidden">Pending commands</caption>
                <thead>
                  <tr>
                    <th scope="col">Command</th>
                    <th scope="col">Effect type</th>
                    <th scope="col">Label</th>
                    <th scope="col">Issued</th>
                    <th scope="col">Attempts</th>
                    <th scope="col">Ledger status</th>
                    <th scope="col">Last error</th>
                  </tr>
                </thead>
                <tbody>
                  {inst.pending.map((p) => (
                    <tr key={p.command_id}>
                      <th scope="row"><code>{p.command_id}</code></th>
                      <td><code>{p.effect_type}</code></td>
                      <td>{p.label}</td>
                      <td><Time value={p.issued_at_ms} /></td>
                      <td className="num">{p.attempts}</td>
                      <td><Badge value={p.ledger_status} /></td>
                      <td className="failure">{p.last_error || <span className="muted">—</span>}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
          <h2>Timers</h2>
          {inst.timers.length === 0 ? (
            <Empty>No timers</Empty>
          ) : (
            <table className="compact">
              <caption className="visually-hidden">Timers</caption>
              <thead>
                <tr>
                  <th scope="col">Timer</th>
                  <th scope="col">Fires at</th>
                </tr>
              </thead>
              <tbody>
                {inst.timers.map((t) => (
                  <tr key={t.name}>
                    <th scope="row">{t.name}</th>
                    <td><Time value={t.fire_at_ms} /></td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
          <h2>Applied events</h2>
          {inst.applied_events.length === 0 ? (
            <Empty>No applied events</Empty>
          ) : (
            <table className="compact">
              <caption className="visually-hidden">Applied events, newest last</caption>
              <thead>
                <tr>
                  <th scope="col">Stream sequence</th>
                  <th scope="col">Index</th>
                </tr>
              </thead>
              <tbody>
                {inst.applied_events.map((e) => (
                  <tr key={`${e.stream_sequence}/${e.index}`}>
                    <td className="num">{e.stream_sequence}</td>
                    <td className="num">{e.index}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </>
      ) : null}
      {askReason && (
        <PromptDialog
          title={`Cancel ${name} ${id}?`}
          label="Reason"
          confirmLabel="Cancel instance"
          cancelLabel="Keep running"
          danger
          busy={verb.pending}
          onCancel={() => setAskReason(false)}
          onConfirm={(reason) => {
            setAskReason(false);
            void run('cancel', reason);
          }}
        >
          <p>The workflow compensates what it has done so far. The reason is kept in the audit trail.</p>
        </PromptDialog>
      )}
    </section>
  );
}
