import { useCallback, useState } from 'react';

/** Cursor paging: a stack of the cursors that led to each page, so "Previous" works. */
export function useCursorPager() {
  const [stack, setStack] = useState<string[]>([]);
  const cursor = stack.length > 0 ? stack[stack.length - 1] : null;
  const next = useCallback((c: string) => setStack((s) => [...s, c]), []);
  const prev = useCallback(() => setStack((s) => s.slice(0, -1)), []);
  const reset = useCallback(() => setStack([]), []);
  return { cursor: cursor ?? null, page: stack.length + 1, next, prev, reset };
}

export function Pager({
  page,
  nextCursor,
  onNext,
  onPrev,
  label,
}: {
  page: number;
  nextCursor: string | null | undefined;
  onNext: (cursor: string) => void;
  onPrev: () => void;
  label: string;
}) {
  return (
    <nav className="pager" aria-label={`${label} pages`}>
      <button type="button" onClick={onPrev} disabled={page <= 1}>
        ← Previous page
      </button>
      <span>Page {page}</span>
      <button type="button" onClick={() => nextCursor && onNext(nextCursor)} disabled={!nextCursor}>
        Next page →
      </button>
    </nav>
  );
}
