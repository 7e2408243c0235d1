import { useState } from 'react';
import type { HeldInfo, NodeInfo, NodeRole } from '../api/types';
import { ProblemAlert } from '../components/ProblemAlert';
import { SortHeader, sortRows, type Sort } from '../components/SortHeader';
import { Badge, Empty, Loading, Notice } from '../components/Status';
import { formatUptime } from '../format';
import { usePoll } from '../hooks/usePoll';
import { href, navigate, useRoute } from '../router';
import { useApi } from '../session';
import { ScreenHeader } from './ScreenHeader';

type Column = 'role' | 'node_id' | 'address' | 'health' | 'version' | 'uptime_seconds' | 'drain_state';
const ROLES: NodeRole[] = ['aggregate', 'projection', 'runner'];

/** `view balances: 3 messages held for 42s`. */
function heldText(h: HeldInfo): string {
  const what = h.kind === 'view' ? 'document' : 'message';
  return `${h.kind} ${h.name}: ${String(h.messages)} ${what}${h.messages === 1 ? '' : 's'} held for ${formatUptime(h.oldest_seconds)}`;
}

export function Nodes() {
  const api = useApi();
  const route = useRoute();
  const roleParam = route.query.get('role') ?? '';
  const role = (ROLES as string[]).includes(roleParam) ? roleParam : '';
  const [sort, setSort] = useState<Sort<Column>>({ key: 'role', dir: 'ascending' });
  const poll = usePoll((signal) => api.nodes(signal), 5000);

  const nodes = poll.data?.nodes ?? [];
  const shown = sortRows(
    nodes.filter((n) => role === '' || n.role === role),
    sort,
    (n: NodeInfo, k) => n[k],
  );

  const holding = nodes.filter((n) => (n.held ?? []).length > 0);

  return (
    <section aria-labelledby="nodes-title">
      <ScreenHeader id="nodes-title" title="Nodes" updatedAt={poll.updatedAt} onRefresh={poll.refresh}>
        Every node the Gateway knows, its health and version.
      </ScreenHeader>
      <div className="toolbar">
        <label>
          Role{' '}
          <select
            value={role}
            onChange={(e) => navigate(href(['nodes'], { role: e.target.value }), { replace: true })}
          >
            <option value="">All roles</option>
            {ROLES.map((r) => (
              <option key={r} value={r}>
                {r}
              </option>
            ))}
          </select>
        </label>
        <span className="muted">
          {shown.length} of {nodes.length} nodes
        </span>
      </div>
      <ProblemAlert problem={poll.error} />
      {holding.length > 0 && (
        <Notice tone="warn">
          <strong>Waiting for a store.</strong> These nodes hold messages because a store (a KV bucket, a
          stream, NATS) does not answer. Nothing is failed for an outage: each is tried again until the
          store answers.
          <ul aria-label="Held messages">
            {holding.flatMap((n) =>
              (n.held ?? []).map((h) => (
                <li key={`${n.node_id ?? n.address}/${h.kind}/${h.name}`}>
                  <code>{n.node_id ?? n.address}</code> — {heldText(h)}
                </li>
              )),
            )}
          </ul>
        </Notice>
      )}
      {poll.loading && !poll.data ? (
        <Loading what="nodes" />
      ) : shown.length === 0 && !poll.error ? (
        <Empty>{nodes.length === 0 ? 'No nodes' : `No ${role} nodes`}</Empty>
      ) : shown.length > 0 ? (
        <div className="table-wrap">
          <table>
            <caption className="visually-hidden">Nodes</caption>
            <thead>
              <tr>
                <SortHeader column="role" sort={sort} onSort={setSort}>Role</SortHeader>
                <SortHeader column="node_id" sort={sort} onSort={setSort}>Node id</SortHeader>
                <SortHeader column="address" sort={sort} onSort={setSort}>Address</SortHeader>
                <SortHeader column="health" sort={sort} onSort={setSort}>Health</SortHeader>
                <SortHeader column="version" sort={sort} onSort={setSort}>Version</SortHeader>
                <SortHeader column="uptime_seconds" sort={sort} onSort={setSort}>Uptime</SortHeader>
                <SortHeader column="drain_state" sort={sort} onSort={setSort}>Drain state</SortHeader>
                <th scope="col">Behaviours</th>
                <th scope="col">Held</th>
                <th scope="col">Details</th>
              </tr>
            </thead>
            <tbody>
              {shown.map((n) => (
                <tr key={`${n.role}/${n.node_id ?? n.address}`}>
                  <td><Badge value={n.role} /></td>
                  <td className="nowrap"><code>{n.node_id ?? '—'}</code></td>
                  <td><code>{n.address}</code></td>
                  <td>
                    <Badge value={n.health} />
                    {n.error && <div className="cell-error">{n.error}</div>}
                  </td>
                  <td>{n.version ?? '—'}</td>
                  <td>{formatUptime(n.uptime_seconds)}</td>
                  <td>{n.role === 'runner' ? <Badge value={n.drain_state} /> : <span className="muted">—</span>}</td>
                  <td>{n.behaviours && n.behaviours.length > 0 ? n.behaviours.join(', ') : <span className="muted">—</span>}</td>
                  <td>
                    {(n.held ?? []).length > 0 ? (
                      (n.held ?? []).map((h) => (
                        <div key={`${h.kind}/${h.name}`} className="lagging">
                          {h.name}: {h.messages} for {formatUptime(h.oldest_seconds)}
                        </div>
                      ))
                    ) : (
                      <span className="muted">—</span>
                    )}
                  </td>
                  <td>
                    <div className="links">
                      {n.node_id && (
                        <a href={href(['supervision'], { node: n.node_id })} aria-label={`Supervision tree of ${n.node_id}`}>
                          Supervision
                        </a>
                      )}
                      {n.role === 'runner' && n.node_id && (
                        <a href={href(['runners', n.node_id])} aria-label={`Runner details of ${n.node_id}`}>
                          Runner
                        </a>
                      )}
                    </div>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
    </section>
  );
}
