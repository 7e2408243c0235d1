import { useId, useState } from 'react';
import { Pager, useCursorPager } from '../components/Pager';
import { ProblemAlert } from '../components/ProblemAlert';
import { Badge, Empty, Loading, Time } from '../components/Status';
import { usePoll } from '../hooks/usePoll';
import { useApi } from '../session';
import { ScreenHeader } from './ScreenHeader';

const PAGE_SIZES = [25, 50, 100, 200];

export function Audit() {
  const api = useApi();
  const pager = useCursorPager();
  const [limit, setLimit] = useState(100);
  const limitId = useId();
  const poll = usePoll((signal) => api.audit({ limit, cursor: pager.cursor }, signal), pager.page === 1 ? 10_000 : null, {
    key: `${limit}|${pager.cursor ?? ''}`,
  });
  const entries = poll.data?.entries ?? [];

  return (
    <section aria-labelledby="audit-title">
      <ScreenHeader id="audit-title" title="Audit" updatedAt={poll.updatedAt} onRefresh={poll.refresh}>
        Every operator verb, who ran it and how it ended — newest first.
      </ScreenHeader>
      <div className="toolbar">
        <label htmlFor={limitId}>Entries per page</label>
        <select
          id={limitId}
          value={limit}
          onChange={(e) => {
            pager.reset();
            setLimit(Number(e.target.value));
          }}
        >
          {PAGE_SIZES.map((n) => (
            <option key={n} value={n}>
              {n}
            </option>
          ))}
        </select>
      </div>
      <ProblemAlert problem={poll.error} />
      {poll.loading && !poll.data ? (
        <Loading what="the audit trail" />
      ) : entries.length === 0 && !poll.error ? (
        <Empty>No audit entries</Empty>
      ) : entries.length > 0 ? (
        <>
          <div className="table-wrap">
            <table>
              <caption className="visually-hidden">Audit entries, newest first</caption>
              <thead>
                <tr>
                  <th scope="col">Time</th>
                  <th scope="col">Actor</th>
                  <th scope="col">Tenant</th>
                  <th scope="col">Action</th>
                  <th scope="col">Target</th>
                  <th scope="col">Outcome</th>
                  <th scope="col">Detail</th>
                </tr>
              </thead>
              <tbody>
                {entries.map((e, i) => (
                  <tr key={`${e.time}|${e.action}|${e.target}|${i}`}>
                    <td><Time value={e.time} /></td>
                    <td>{e.actor}</td>
                    <td>{e.tenant}</td>
                    <td><code>{e.action}</code></td>
                    <td><code>{e.target}</code></td>
                    <td><Badge value={e.outcome} /></td>
                    <td>{e.detail ?? <span className="muted">—</span>}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          <Pager label="Audit" page={pager.page} nextCursor={poll.data?.next_cursor} onNext={pager.next} onPrev={pager.prev} />
        </>
      ) : null}
    </section>
  );
}
