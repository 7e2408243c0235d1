import { useId, useRef, useState } from 'react';
import type { NodeSupervision, SupervisionResponse, SupervisorSnapshot } from '../api/types';
import { PressureBar } from '../components/Bars';
import { ProblemAlert } from '../components/ProblemAlert';
import { Badge, Empty, Loading, Time } from '../components/Status';
import { usePoll } from '../hooks/usePoll';
import { href, navigate, useRoute } from '../router';
import { useApi } from '../session';
import { ScreenHeader } from './ScreenHeader';
import {
  childKey,
  filterTree,
  nodeKey,
  restartCounts,
  restartIncreases,
  supervisorKey,
  treeSummary,
} from './supervisionModel';

export const SUPERVISION_INTERVAL_MS = 2000;
/** How far back "restarts in the last minute" looks. */
const STORM_WINDOW_MS = 60_000;

interface Snapshot {
  data: SupervisionResponse;
  /** Restart increases since the previous refresh. */
  increased: Map<string, number>;
  /** Restarts over the last minute, by key (only keys with some). */
  recent: Map<string, number>;
}

export function Supervision() {
  const api = useApi();
  const route = useRoute();
  const nodeFilter = route.query.get('node') ?? '';
  const [text, setText] = useState('');
  const [paused, setPaused] = useState(false);
  const textId = useId();
  const previous = useRef<Map<string, number> | null>(null);
  const history = useRef<Map<string, { at: number; delta: number }[]>>(new Map());

  const poll = usePoll<Snapshot>(
    async (signal) => {
      const data = await api.supervision(signal);
      const counts = restartCounts(data.nodes);
      const increased = restartIncreases(previous.current, counts);
      previous.current = counts;
      const now = Date.now();
      const recent = new Map<string, number>();
      for (const [k, d] of increased) history.current.set(k, [...(history.current.get(k) ?? []), { at: now, delta: d }]);
      for (const [k, list] of history.current) {
        const kept = list.filter((e) => now - e.at <= STORM_WINDOW_MS);
        if (kept.length === 0) history.current.delete(k);
        else {
          history.current.set(k, kept);
          recent.set(k, kept.reduce((s, e) => s + e.delta, 0));
        }
      }
      return { data, increased, recent };
    },
    SUPERVISION_INTERVAL_MS,
    { paused },
  );

  const nodes = poll.data?.data.nodes ?? [];
  const shown = nodes.filter((n) => nodeFilter === '' || n.node_id === nodeFilter || n.address === nodeFilter);
  const increased = poll.data?.increased ?? new Map<string, number>();
  // "projection-1: root › consumer-balances (+2)", from the keys "<role>/<node>|<path>[|<child>]".
  const restartedNames = [...increased.entries()].map(([k, d]) => {
    const [nodePart = '', ...rest] = k.split('|');
    return `${nodePart.replace(/^[^/]*\//, '')}: ${rest.join(' › ')} (+${String(d)})`;
  });

  return (
    <section aria-labelledby="supervision-title">
      <ScreenHeader
        id="supervision-title"
        title="Supervision"
        updatedAt={poll.updatedAt}
        onRefresh={poll.refresh}
        actions={
          <label className="inline">
            <input type="checkbox" checked={paused} onChange={(e) => setPaused(e.target.checked)} /> Pause auto-refresh
          </label>
        }
      >
        Every node&apos;s supervision tree, refreshed every {SUPERVISION_INTERVAL_MS / 1000} s.
      </ScreenHeader>
      <div className="toolbar">
        <label>
          Node{' '}
          <select
            value={nodeFilter}
            onChange={(e) => navigate(href(['supervision'], { node: e.target.value }), { replace: true })}
          >
            <option value="">All nodes</option>
            {nodes.map((n) => (
              <option key={nodeKey(n)} value={n.node_id ?? n.address}>
                {n.node_id ?? n.address} ({n.role})
              </option>
            ))}
            {nodeFilter !== '' && !nodes.some((n) => (n.node_id ?? n.address) === nodeFilter) && (
              <option value={nodeFilter}>{nodeFilter}</option>
            )}
          </select>
        </label>
        <label htmlFor={textId}>Filter children</label>
        <input
          id={textId}
          type="search"
          placeholder="name, kind, status or failure"
          value={text}
          onChange={(e) => setText(e.target.value)}
        />
        {paused && <span className="badge badge-warn">paused</span>}
      </div>
      <ProblemAlert problem={poll.error} />
      <div role="status" aria-live="polite" className={increased.size > 0 ? 'notice notice-warn' : 'visually-hidden'}>
        {increased.size > 0
          ? `Restarted since the last refresh: ${restartedNames.join(', ')}`
          : 'No restarts since the last refresh'}
      </div>
      {poll.loading && !poll.data ? (
        <Loading what="supervision trees" />
      ) : shown.length === 0 && !poll.error ? (
        <Empty>{nodes.length === 0 ? 'No nodes' : `No node ${nodeFilter}`}</Empty>
      ) : (
        shown.map((n) => (
          <NodeTree key={nodeKey(n)} node={n} text={text} increased={increased} recent={poll.data?.recent ?? new Map()} />
        ))
      )}
    </section>
  );
}

function NodeTree({
  node,
  text,
  increased,
  recent,
}: {
  node: NodeSupervision;
  text: string;
  increased: Map<string, number>;
  recent: Map<string, number>;
}) {
  const key = nodeKey(node);
  const headingId = useId();
  const tree = node.tree ? filterTree(node.tree, text) : null;
  const summary = node.tree ? treeSummary(node.tree) : null;
  return (
    <article className="card" aria-labelledby={headingId}>
      <header className="card-header">
        <h2 id={headingId}>
          <Badge value={node.role} /> <code>{node.node_id ?? node.address}</code>
        </h2>
        <span className="muted small">
          <code>{node.address}</code>
          {summary && (
            <>
              {' · '}
              {summary.children} children{summary.failing > 0 ? `, ${summary.failing} not running` : ''}
            </>
          )}
        </span>
      </header>
      {node.error && (
        <div role="alert" className="alert">
          <p className="alert-title">
            <strong>No tree from this node</strong>
          </p>
          <p className="alert-detail">{node.error}</p>
        </div>
      )}
      {node.tree && !tree && <Empty>No children match “{text}”</Empty>}
      {tree && (
        <SupervisorView
          sup={tree}
          path={[tree.name]}
          node={key}
          label={node.node_id ?? node.address}
          increased={increased}
          recent={recent}
        />
      )}
    </article>
  );
}

function RestartCell({ restarts, delta, recent }: { restarts: number; delta: number | undefined; recent: number | undefined }) {
  return (
    <>
      <span className="num">{restarts}</span>
      {delta !== undefined && (
        <span className="badge badge-bad restart-delta" title="restarts since the previous refresh">
          +{delta} since last refresh
        </span>
      )}
      {recent !== undefined && recent > (delta ?? 0) && (
        <span className="muted small"> ({recent} in the last minute)</span>
      )}
    </>
  );
}

function SupervisorView({
  sup,
  path,
  node,
  label,
  increased,
  recent,
}: {
  sup: SupervisorSnapshot;
  path: string[];
  /** Key of the node (restart counters). */
  node: string;
  /** The node as shown. */
  label: string;
  increased: Map<string, number>;
  recent: Map<string, number>;
}) {
  const supKey = supervisorKey(node, path);
  const nested = sup.supervisors ?? [];
  const nestedNames = new Set(nested.map((s) => s.name));
  return (
    <div className={`supervisor${increased.has(supKey) ? ' restarted' : ''}`}>
      <h3 className="supervisor-title">
        <span className="muted small">supervisor</span> {sup.name} <Badge value={sup.status} />{' '}
        <span className="muted small">
          {sup.strategy.replace(/_/g, '-')} · restarts{' '}
        </span>
        <RestartCell restarts={sup.restarts} delta={increased.get(supKey)} recent={recent.get(supKey)} />
      </h3>
      {sup.children.length === 0 ? (
        <Empty>No children</Empty>
      ) : (
        <div className="table-wrap">
          <table className="children">
            <caption className="visually-hidden">
              Children of {sup.name} on {label}
            </caption>
            <thead>
              <tr>
                <th scope="col">Child</th>
                <th scope="col">Kind</th>
                <th scope="col">Status</th>
                <th scope="col">Restarts</th>
                <th scope="col">Last failure</th>
                <th scope="col">Mailbox</th>
              </tr>
            </thead>
            <tbody>
              {sup.children.map((c) => {
                const k = childKey(node, path, c.name);
                const delta = increased.get(k);
                return (
                  <tr key={c.name} className={delta !== undefined ? 'restarted' : undefined}>
                    <th scope="row">
                      {c.name}
                      {c.kind === 'supervisor' && nestedNames.has(c.name) && (
                        <span className="muted small"> (tree below)</span>
                      )}
                    </th>
                    <td>{c.kind.replace(/_/g, ' ')}</td>
                    <td>
                      <Badge value={c.status} />
                    </td>
                    <td>
                      <RestartCell restarts={c.restarts} delta={delta} recent={recent.get(k)} />
                    </td>
                    <td>
                      {c.last_failure ? (
                        <>
                          <div className="failure">{c.last_failure}</div>
                          <div className="small muted">
                            <Time value={c.last_failure_at} />
                          </div>
                        </>
                      ) : (
                        <span className="muted">—</span>
                      )}
                    </td>
                    <td>
                      {c.mailbox ? (
                        <PressureBar depth={c.mailbox.depth} capacity={c.mailbox.capacity} />
                      ) : (
                        <span className="muted small">not bounded</span>
                      )}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
      {nested.length > 0 && (
        <div className="nested">
          {nested.map((s) => (
            <SupervisorView
              key={s.name}
              sup={s}
              path={[...path, s.name]}
              node={node}
              label={label}
              increased={increased}
              recent={recent}
            />
          ))}
        </div>
      )}
    </div>
  );
}
