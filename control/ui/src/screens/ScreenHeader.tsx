import type { ReactNode } from 'react';
import { formatTime } from '../format';

/** A screen's heading, its one-line purpose, when its data arrived and a refresh button. */
export function ScreenHeader({
  id,
  title,
  children,
  updatedAt,
  onRefresh,
  actions,
}: {
  id: string;
  title: string;
  children?: ReactNode;
  updatedAt?: number | null;
  onRefresh?: () => void;
  actions?: ReactNode;
}) {
  return (
    <header className="screen-header">
      <div>
        <h1 id={id}>{title}</h1>
        {children && <p className="muted">{children}</p>}
      </div>
      <div className="screen-actions">
        {updatedAt ? <span className="muted small">Updated {formatTime(updatedAt)}</span> : null}
        {actions}
        {onRefresh && (
          <button type="button" onClick={onRefresh}>
            Refresh now
          </button>
        )}
      </div>
    </header>
  );
}
