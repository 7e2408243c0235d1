import { formatNumber, percent } from '../format';

function level(p: number): 'low' | 'mid' | 'high' {
  if (p >= 85) return 'high';
  if (p >= 50) return 'mid';
  return 'low';
}

/** Mailbox depth against capacity, as a meter labelled "mailbox 3 of 64". */
export function PressureBar({ depth, capacity }: { depth: number; capacity: number }) {
  const p = percent(depth, capacity);
  const label = `mailbox ${depth} of ${capacity}`;
  return (
    <div className="bar-wrap">
      <div
        role="meter"
        aria-label={label}
        aria-valuemin={0}
        aria-valuemax={capacity}
        aria-valuenow={depth}
        aria-valuetext={`${depth} of ${capacity} (${Math.round(p)}%)`}
        className={`bar bar-${level(p)}`}
        title={label}
      >
        <div className="bar-fill" style={{ width: `${p}%` }} />
      </div>
      <span className="bar-text">
        {depth}/{capacity}
      </span>
    </div>
  );
}

/** Progress of a long job (a view rebuild), as a progressbar. */
export function ProgressBar({ value, max, label }: { value: number; max: number; label: string }) {
  const p = percent(value, max);
  return (
    <div className="bar-wrap">
      <div
        role="progressbar"
        aria-label={label}
        aria-valuemin={0}
        aria-valuemax={max}
        aria-valuenow={value}
        aria-valuetext={`${formatNumber(value)} of ${formatNumber(max)} (${Math.round(p)}%)`}
        className="bar bar-progress"
      >
        <div className="bar-fill" style={{ width: `${p}%` }} />
      </div>
      <span className="bar-text">
        {formatNumber(value)} / {formatNumber(max)} ({Math.round(p)}%)
      </span>
    </div>
  );
}

/** A progressbar with no value yet (a request accepted, no progress reported). */
export function IndeterminateBar({ label }: { label: string }) {
  return (
    <div className="bar-wrap">
      <div role="progressbar" aria-label={label} className="bar bar-progress bar-indeterminate">
        <div className="bar-fill" />
      </div>
    </div>
  );
}
