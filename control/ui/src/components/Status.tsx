import type { ReactNode } from 'react';
import { formatTime, isoTime, relative } from '../format';

export function Loading({ what }: { what: string }) {
  return (
    <p className="muted" role="status" aria-live="polite">
      Loading {what}…
    </p>
  );
}

export function Empty({ children }: { children: ReactNode }) {
  return <p className="empty">{children}</p>;
}

/** A result message (an operator verb's outcome), announced politely. */
export function Notice({ children, tone = 'ok' }: { children: ReactNode; tone?: 'ok' | 'warn' }) {
  return (
    <div role="status" className={`notice notice-${tone}`}>
      {children}
    </div>
  );
}

const TONES: Record<string, string> = {
  serving: 'good',
  running: 'good',
  applied: 'good',
  completed: 'good',
  purged: 'good',
  ok: 'good',
  not_serving: 'bad',
  unreachable: 'bad',
  failed: 'bad',
  restarting: 'warn',
  stopped: 'muted',
  intake_stopped: 'warn',
  in_flight_zero: 'warn',
  outbox_flushed: 'warn',
  drained: 'muted',
  paused: 'warn',
  already_gone: 'muted',
  // A pending effect whose ledger did not answer: its attempts are not known.
  unknown: 'warn',
};

/** A short status word as a coloured badge (the colour is never the only cue: the word is shown). */
export function Badge({ value }: { value: string | null | undefined }) {
  if (value === null || value === undefined || value === '') return <span className="muted">—</span>;
  return <span className={`badge badge-${TONES[value] ?? 'neutral'}`}>{value.replace(/_/g, ' ')}</span>;
}

export function Time({ value }: { value: string | number | null | undefined }) {
  const iso = isoTime(value);
  if (!iso) return <span className="muted">—</span>;
  return (
    <time dateTime={iso} title={relative(value)}>
      {formatTime(value)}
    </time>
  );
}
