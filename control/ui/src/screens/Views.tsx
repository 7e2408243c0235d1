import { useLayoutEffect, useRef, useState } from 'react';
import type { ViewStatus, ViewsResponse } from '../api/types';
import { IndeterminateBar, ProgressBar } from '../components/Bars';
import { ConfirmDialog } from '../components/Dialog';
import { ProblemAlert } from '../components/ProblemAlert';
import { Empty, Loading, Notice } from '../components/Status';
import { formatNumber } from '../format';
import { useAction } from '../hooks/useAction';
import { usePoll } from '../hooks/usePoll';
import { useApi, useCan } from '../session';
import { ScreenHeader } from './ScreenHeader';

export const VIEWS_FAST_MS = 1000;
/** A lag from which the number is drawn as a warning. */
const LAG_WARN = 100;
export const VIEWS_SLOW_MS = 5000;
/** A requested rebuild that never shows up as `rebuilding` is forgotten after this long. */
const REQUEST_GRACE_MS = 30_000;

interface Requested {
  generation: number;
  at: number;
  seen: boolean;
}

type Pending = { kind: 'rebuild' | 'cancel'; view: ViewStatus } | null;

export function Views() {
  const api = useApi();
  const canOperate = useCan('admin', 'operate');
  const [requested, setRequested] = useState<Record<string, Requested>>({});
  const [finished, setFinished] = useState<string | null>(null);
  const [confirm, setConfirm] = useState<Pending>(null);
  const rebuild = useAction(api.rebuildView);
  const cancel = useAction(api.cancelRebuild);

  const requestedRef = useRef(requested);
  useLayoutEffect(() => {
    requestedRef.current = requested;
  });
  const [fast, setFast] = useState(false);
  /** The view whose rebuild request is on its way. */
  const [posting, setPosting] = useState<string | null>(null);

  const poll = usePoll<ViewsResponse>(
    async (signal) => {
      const data = await api.views(signal);
      const now = Date.now();
      const prev = requestedRef.current;
      const next: Record<string, Requested> = {};
      for (const [name, req] of Object.entries(prev)) {
        const v = data.views.find((x) => x.view === name);
        if (!v) continue;
        if (v.generation >= req.generation) {
          setFinished(`Rebuild of ${name} finished: generation ${v.generation} is active.`);
          continue;
        }
        const seen = req.seen || v.rebuilding !== null;
        if (v.rebuilding === null && (seen || now - req.at > REQUEST_GRACE_MS)) continue;
        next[name] = { ...req, seen };
      }
      if (Object.keys(prev).length > 0) {
        requestedRef.current = next;
        setRequested(next);
      }
      setFast(data.views.some((v) => v.rebuilding !== null) || Object.keys(next).length > 0);
      return data;
    },
    fast ? VIEWS_FAST_MS : VIEWS_SLOW_MS,
    { key: 'views' },
  );
  const views = poll.data?.views ?? [];

  return (
    <section aria-labelledby="views-title">
      <ScreenHeader id="views-title" title="Views" updatedAt={poll.updatedAt} onRefresh={poll.refresh}>
        Projections: the generation serving reads, how far it has read the stream, and rebuilds.
      </ScreenHeader>
      <ProblemAlert problem={poll.error} />
      <ProblemAlert problem={rebuild.error} onDismiss={rebuild.reset} />
      <ProblemAlert problem={cancel.error} onDismiss={cancel.reset} />
      {finished && <Notice>{finished}</Notice>}
      {rebuild.result && !finished && (
        <Notice>
          Rebuild of {rebuild.result.view} started: generation {rebuild.result.generation} (generation{' '}
          {rebuild.result.active_generation} keeps serving until it catches up).
        </Notice>
      )}
      {cancel.result && (
        <Notice tone="warn">
          Rebuild of {cancel.result.view} cancelled: generation {cancel.result.cancelled_generation} discarded, generation{' '}
          {cancel.result.active_generation} serves.
        </Notice>
      )}
      {poll.loading && !poll.data ? (
        <Loading what="views" />
      ) : views.length === 0 && !poll.error ? (
        <Empty>No views</Empty>
      ) : views.length > 0 ? (
        <div className="table-wrap">
          <table>
            <caption className="visually-hidden">Views</caption>
            <thead>
              <tr>
                <th scope="col">View</th>
                <th scope="col">Generation</th>
                <th scope="col">Checkpoint</th>
                <th scope="col">Stream last sequence</th>
                <th scope="col">Lag</th>
                <th scope="col">Rebuild</th>
                <th scope="col">
                  <span className="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {views.map((v) => {
                const req = requested[v.view];
                const max = v.stream_last_sequence || poll.data?.stream_last_sequence || 0;
                return (
                  <tr key={v.view}>
                    <th scope="row">{v.view}</th>
                    <td className="num">{v.generation}</td>
                    <td className="num">{formatNumber(v.checkpoint)}</td>
                    <td className="num">{formatNumber(v.stream_last_sequence)}</td>
                    <td
                      className={`num${(v.lag ?? 0) >= LAG_WARN ? ' lagging' : ''}`}
                      title={v.lag === null ? 'Not known: the node could not read the stream' : undefined}
                    >
                      {formatNumber(v.lag)}
                    </td>
                    <td className="progress-cell">
                      {v.rebuilding ? (
                        <>
                          <span className="small">generation {v.rebuilding.generation}</span>
                          <ProgressBar
                            value={v.rebuilding.checkpoint}
                            max={Math.max(max, v.rebuilding.checkpoint)}
                            label={`Rebuild of ${v.view} to generation ${v.rebuilding.generation}`}
                          />
                        </>
                      ) : req || posting === v.view ? (
                        <>
                          <span className="small">
                            {req ? `generation ${req.generation} requested` : 'requesting a rebuild…'}
                          </span>
                          <IndeterminateBar
                            label={`Rebuild of ${v.view} to generation ${req ? req.generation : v.generation + 1}`}
                          />
                        </>
                      ) : (
                        <span className="muted">—</span>
                      )}
                    </td>
                    <td>
                      {v.rebuilding ? (
                        <button
                          type="button"
                          onClick={() => setConfirm({ kind: 'cancel', view: v })}
                          disabled={!canOperate || cancel.pending}
                          aria-label={`Cancel rebuild of ${v.view}`}
                        >
                          Cancel rebuild
                        </button>
                      ) : (
                        <button
                          type="button"
                          onClick={() => setConfirm({ kind: 'rebuild', view: v })}
                          disabled={!canOperate || rebuild.pending || req !== undefined}
                          aria-label={`Rebuild ${v.view}`}
                        >
                          Rebuild
                        </button>
                      )}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
          {!canOperate && (
            <p className="muted small">
              Rebuild and cancel need the right <code>admin:operate</code>.
            </p>
          )}
        </div>
      ) : null}
      {confirm?.kind === 'rebuild' && (
        <ConfirmDialog
          title={`Rebuild ${confirm.view.view}?`}
          confirmLabel="Start rebuild"
          busy={rebuild.pending}
          onCancel={() => setConfirm(null)}
          onConfirm={async () => {
            const view = confirm.view;
            setConfirm(null);
            setFinished(null);
            cancel.reset();
            setPosting(view.view);
            const res = await rebuild.run(view.view);
            setPosting(null);
            if (res) {
              const next = { ...requestedRef.current, [view.view]: { generation: res.generation, at: Date.now(), seen: false } };
              requestedRef.current = next;
              setRequested(next);
              setFast(true);
              poll.refresh();
            }
          }}
        >
          <p>
            A new generation of <strong>{confirm.view.view}</strong> is built from the start of the stream. Generation{' '}
            {confirm.view.generation} keeps serving reads until the new one catches up.
          </p>
        </ConfirmDialog>
      )}
      {confirm?.kind === 'cancel' && confirm.view.rebuilding && (
        <ConfirmDialog
          title={`Cancel the rebuild of ${confirm.view.view}?`}
          confirmLabel="Cancel rebuild"
          cancelLabel="Keep rebuilding"
          danger
          busy={cancel.pending}
          onCancel={() => setConfirm(null)}
          onConfirm={async () => {
            const view = confirm.view;
            setConfirm(null);
            rebuild.reset();
            const res = await cancel.run(view.view);
            if (res) {
              const next = Object.fromEntries(
                Object.entries(requestedRef.current).filter(([name]) => name !== view.view),
              );
              requestedRef.current = next;
              setRequested(next);
              poll.refresh();
            }
          }}
        >
          <p>
            Generation {confirm.view.rebuilding.generation} is discarded; generation {confirm.view.generation} goes on
            serving.
          </p>
        </ConfirmDialog>
      )}
    </section>
  );
}
