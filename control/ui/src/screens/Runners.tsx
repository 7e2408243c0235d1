import { useId, useState } from 'react';
import { isRunnerStatus, type RunnerStatus, type RunnerVerb } from '../api/types';
import { ConfirmDialog } from '../components/Dialog';
import { ProblemAlert } from '../components/ProblemAlert';
import { Badge, Empty, Loading, Notice } from '../components/Status';
import { formatUptime } from '../format';
import { useAction } from '../hooks/useAction';
import { usePoll } from '../hooks/usePoll';
import { href } from '../router';
import { useApi, useCan } from '../session';
import { ScreenHeader } from './ScreenHeader';

export const RUNNERS_INTERVAL_MS = 2000;

export function Runners() {
  const api = useApi();
  const poll = usePoll((signal) => api.runnerNodes(signal), RUNNERS_INTERVAL_MS);
  const nodes = poll.data?.nodes ?? [];
  return (
    <section aria-labelledby="runners-title">
      <ScreenHeader id="runners-title" title="Runners" updatedAt={poll.updatedAt} onRefresh={poll.refresh}>
        Workflow runner nodes: drain state, work in flight, effects and consumers.
      </ScreenHeader>
      <ProblemAlert problem={poll.error} />
      {poll.loading && !poll.data ? (
        <Loading what="runners" />
      ) : nodes.length === 0 && !poll.error ? (
        <Empty>No runner nodes</Empty>
      ) : (
        <>
          {nodes.some(isRunnerStatus) && (
            <div className="table-wrap">
              <table>
                <caption className="visually-hidden">Runner nodes</caption>
                <thead>
                  <tr>
                    <th scope="col">Node id</th>
                    <th scope="col">Address</th>
                    <th scope="col">Version</th>
                    <th scope="col">Uptime</th>
                    <th scope="col">Drain state</th>
                    <th scope="col">In flight</th>
                    <th scope="col">Outbox depth</th>
                    <th scope="col">Workflows</th>
                  </tr>
                </thead>
                <tbody>
                  {nodes.filter(isRunnerStatus).map((n) => (
                    <tr key={n.node_id}>
                      <th scope="row">
                        <a href={href(['runners', n.node_id])}>{n.node_id}</a>
                      </th>
                      <td><code>{n.address}</code></td>
                      <td>{n.version}</td>
                      <td>{formatUptime(n.uptime_seconds)}</td>
                      <td><Badge value={n.drain_state} /></td>
                      <td className="num">{n.in_flight}</td>
                      <td className="num">{n.outbox_depth}</td>
                      <td>{n.enabled_workflows.join(', ') || <span className="muted">none</span>}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
          {nodes.map((n) =>
            isRunnerStatus(n) ? (
              <RunnerCard key={n.node_id} runner={n} onChanged={poll.refresh} />
            ) : (
              <article key={n.address} className="card" aria-label={`Runner at ${n.address}`}>
                <h2>
                  <code>{n.address}</code>
                </h2>
                <div role="alert" className="alert">
                  <p className="alert-title">
                    <strong>Runner did not answer</strong>
                  </p>
                  <p className="alert-detail">{n.error}</p>
                </div>
              </article>
            ),
          )}
        </>
      )}
    </section>
  );
}

export function RunnerDetail({ node }: { node: string }) {
  const api = useApi();
  const poll = usePoll((signal) => api.runnerNode(node, signal), RUNNERS_INTERVAL_MS, { key: node });
  return (
    <section aria-labelledby="runner-title">
      <ScreenHeader id="runner-title" title={`Runner ${node}`} updatedAt={poll.updatedAt} onRefresh={poll.refresh}>
        <a href={href(['runners'])}>All runners</a> · <a href={href(['supervision'], { node })}>Supervision tree</a>
      </ScreenHeader>
      <ProblemAlert problem={poll.error} />
      {poll.loading && !poll.data ? (
        <Loading what="the runner" />
      ) : poll.data ? (
        <RunnerCard runner={poll.data} onChanged={poll.refresh} detailed />
      ) : null}
    </section>
  );
}

const VERB_TEXT: Record<RunnerVerb, string> = { drain: 'Drain', undrain: 'Resume', reload: 'Reload' };

function RunnerCard({ runner, onChanged, detailed }: { runner: RunnerStatus; onChanged: () => void; detailed?: boolean }) {
  const api = useApi();
  const canAdmin = useCan('runner', 'admin');
  const [confirmDrain, setConfirmDrain] = useState(false);
  const [outcome, setOutcome] = useState<string | null>(null);
  const headingId = useId();
  const verb = useAction(async (v: RunnerVerb) => {
    if (v === 'drain') return { verb: v, res: await api.drainRunner(runner.node_id) };
    if (v === 'undrain') return { verb: v, res: await api.undrainRunner(runner.node_id) };
    return { verb: v, res: await api.reloadRunner(runner.node_id) };
  });

  const run = async (v: RunnerVerb) => {
    setOutcome(null);
    const out = await verb.run(v);
    if (!out) return;
    if (out.verb === 'reload') {
      const r = out.res as { changes?: string[] };
      const changes = Array.isArray(r.changes) && r.changes.length > 0 ? r.changes.join('; ') : 'no changes';
      setOutcome(`Reload of ${runner.node_id}: ${changes}.`);
    } else {
      const r = out.res as { state?: string; detail?: string };
      setOutcome(
        `${VERB_TEXT[out.verb]} of ${runner.node_id}: ${(r.state ?? 'done').replace(/_/g, ' ')}${r.detail ? ` — ${r.detail}` : ''}.`,
      );
    }
    onChanged();
  };

  return (
    <article className="card" aria-labelledby={headingId}>
      <header className="card-header">
        <h2 id={headingId}>
          {detailed ? 'Status' : <a href={href(['runners', runner.node_id])}>{runner.node_id}</a>}{' '}
          <Badge value={runner.drain_state} />
        </h2>
        <div className="actions">
          <button
            type="button"
            className="danger"
            disabled={!canAdmin || verb.pending || runner.draining}
            onClick={() => setConfirmDrain(true)}
            aria-label={`Drain ${runner.node_id}`}
          >
            Drain
          </button>
          <button
            type="button"
            disabled={!canAdmin || verb.pending || !runner.draining}
            onClick={() => void run('undrain')}
            aria-label={`Resume ${runner.node_id}`}
          >
            Resume
          </button>
          <button
            type="button"
            disabled={!canAdmin || verb.pending}
            onClick={() => void run('reload')}
            aria-label={`Reload ${runner.node_id}`}
          >
            Reload
          </button>
        </div>
      </header>
      {!canAdmin && (
        <p className="muted small">
          Drain, resume and reload need the right <code>runner:admin</code>.
        </p>
      )}
      <ProblemAlert problem={verb.error} onDismiss={verb.reset} />
      {outcome && <Notice>{outcome}</Notice>}
      <dl className="facts">
        <dt>Address</dt>
        <dd><code>{runner.address}</code></dd>
        <dt>Version</dt>
        <dd>{runner.version}</dd>
        <dt>Uptime</dt>
        <dd>{formatUptime(runner.uptime_seconds)}</dd>
        <dt>Draining</dt>
        <dd>{runner.draining ? 'yes' : 'no'}</dd>
        <dt>In flight</dt>
        <dd>{runner.in_flight}</dd>
        <dt>Outbox depth</dt>
        <dd>{runner.outbox_depth}</dd>
        <dt>Enabled workflows</dt>
        <dd>
          {runner.enabled_workflows.length === 0 ? (
            <span className="muted">none</span>
          ) : (
            runner.enabled_workflows.map((w, i) => (
              <span key={w}>
                {i > 0 && ', '}
                <a href={href(['workflows'], { name: w })}>{w}</a>
              </span>
            ))
          )}
        </dd>
      </dl>
      <h3>Effects</h3>
      {runner.effects.length === 0 ? (
        <Empty>No effects</Empty>
      ) : (
        <table className="compact">
          <caption className="visually-hidden">Effects of {runner.node_id}</caption>
          <thead>
            <tr>
              <th scope="col">Effect type</th>
              <th scope="col">In flight</th>
              <th scope="col">Concurrency</th>
              <th scope="col">Max attempts</th>
            </tr>
          </thead>
          <tbody>
            {runner.effects.map((e) => (
              <tr key={e.effect_type}>
                <th scope="row"><code>{e.effect_type}</code></th>
                <td className="num">{e.in_flight}</td>
                <td className="num">{e.concurrency}</td>
                <td className="num">{e.max_attempts}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <h3>Consumers</h3>
      {runner.consumers.length === 0 ? (
        <Empty>No consumers</Empty>
      ) : (
        <table className="compact">
          <caption className="visually-hidden">Consumers of {runner.node_id}</caption>
          <thead>
            <tr>
              <th scope="col">Stream</th>
              <th scope="col">Durable</th>
              <th scope="col">Pending</th>
              <th scope="col">Ack pending</th>
              <th scope="col">Redelivered</th>
              <th scope="col">In flight</th>
              <th scope="col">Fetching</th>
            </tr>
          </thead>
          <tbody>
            {runner.consumers.map((c) => (
              <tr key={`${c.stream}/${c.durable}`}>
                <td><code>{c.stream}</code></td>
                <th scope="row"><code>{c.durable}</code></th>
                <td className="num">{c.pending}</td>
                <td className="num">{c.ack_pending}</td>
                <td className="num">{c.redelivered}</td>
                <td className="num">{c.in_flight}</td>
                <td>{c.fetching ? 'yes' : 'no'}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {confirmDrain && (
        <ConfirmDialog
          title={`Drain ${runner.node_id}?`}
          confirmLabel="Drain node"
          danger
          busy={verb.pending}
          onCancel={() => setConfirmDrain(false)}
          onConfirm={() => {
            setConfirmDrain(false);
            void run('drain');
          }}
        >
          <p>
            The node stops taking new work, finishes what is in flight and flushes its outbox. Starts go to the other
            runners. Resume undoes it.
          </p>
        </ConfirmDialog>
      )}
    </article>
  );
}
