import type { ApiProblem } from '../api/client';

/** An API problem shown as its title and detail, in an alert region. */
export function ProblemAlert({ problem, onDismiss }: { problem: ApiProblem | undefined; onDismiss?: () => void }) {
  if (!problem) return null;
  return (
    <div role="alert" className="alert">
      <p className="alert-title">
        <strong>{problem.title}</strong>
        {problem.status > 0 && <span className="alert-status"> ({problem.status})</span>}
      </p>
      {problem.detail && <p className="alert-detail">{problem.detail}</p>}
      {problem.retryAfter !== null && <p className="alert-hint">Retry after {problem.retryAfter} s.</p>}
      {problem.correlationId && <p className="alert-hint">Correlation id: <code>{problem.correlationId}</code></p>}
      {onDismiss && (
        <button type="button" className="link-button" onClick={onDismiss}>
          Dismiss
        </button>
      )}
    </div>
  );
}
