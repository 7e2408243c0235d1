import { useCallback, useEffect, useLayoutEffect, useRef, useState } from 'react';
import { toProblem, type ApiProblem } from '../api/client';

export interface PollState<T> {
  /** The last answer for the current `key` (kept while a refresh runs or fails). */
  data: T | undefined;
  /** The last refresh's problem; cleared by the next success. */
  error: ApiProblem | undefined;
  /** True until the first answer (or problem) for the current `key`. */
  loading: boolean;
  /** When `data` arrived (ms). */
  updatedAt: number | null;
  /** Fetches now (and restarts the interval). */
  refresh: () => void;
}

export interface PollOptions {
  /** A new key drops the old data and fetches at once (e.g. the filter of a list). */
  key?: string;
  /** Holds the interval; the data stays. */
  paused?: boolean;
}

interface Inner<T> {
  key: string;
  data: T | undefined;
  error: ApiProblem | undefined;
  settled: boolean;
  updatedAt: number | null;
}

function isAbort(err: unknown): boolean {
  return err instanceof DOMException && err.name === 'AbortError';
}

/**
 * Calls `fn` now and then every `intervalMs` after each answer (never two at once), or once when
 * `intervalMs` is null. Stops while the tab is hidden and fetches at once when it shows again.
 */
export function usePoll<T>(
  fn: (signal: AbortSignal) => Promise<T>,
  intervalMs: number | null,
  { key = '', paused = false }: PollOptions = {},
): PollState<T> {
  const fnRef = useRef(fn);
  useLayoutEffect(() => {
    fnRef.current = fn;
  });
  const [inner, setInner] = useState<Inner<T>>({
    key,
    data: undefined,
    error: undefined,
    settled: false,
    updatedAt: null,
  });
  const [tick, setTick] = useState(0);
  // The key and refresh count of the last answer: a change of interval or pause alone does not
  // fetch again at once, it only reschedules.
  const settled = useRef<{ key: string; tick: number; at: number } | null>(null);

  useEffect(() => {
    let cancelled = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const ctrl = new AbortController();
    const hidden = () => typeof document !== 'undefined' && document.visibilityState === 'hidden';

    const schedule = (delay: number | null = intervalMs) => {
      clearTimeout(timer);
      if (cancelled || delay === null || paused || hidden()) return;
      timer = setTimeout(() => void run(), delay);
    };

    const run = async () => {
      clearTimeout(timer);
      try {
        const data = await fnRef.current(ctrl.signal);
        if (cancelled) return;
        settled.current = { key, tick, at: Date.now() };
        setInner({ key, data, error: undefined, settled: true, updatedAt: Date.now() });
      } catch (err) {
        if (cancelled || isAbort(err)) return;
        settled.current = { key, tick, at: Date.now() };
        const error = toProblem(err);
        setInner((prev) =>
          prev.key === key
            ? { ...prev, error, settled: true }
            : { key, data: undefined, error, settled: true, updatedAt: null },
        );
      }
      schedule();
    };

    const onVisibility = () => {
      if (hidden()) clearTimeout(timer);
      else if (intervalMs !== null && !paused) void run();
    };

    const last = settled.current;
    if (last === null || last.key !== key || last.tick !== tick) void run();
    else if (intervalMs !== null) schedule(Math.max(0, last.at + intervalMs - Date.now()));
    document.addEventListener('visibilitychange', onVisibility);
    return () => {
      cancelled = true;
      ctrl.abort();
      clearTimeout(timer);
      document.removeEventListener('visibilitychange', onVisibility);
    };
  }, [key, intervalMs, paused, tick]);

  const refresh = useCallback(() => setTick((t) => t + 1), []);
  const current = inner.key === key;
  return {
    data: current ? inner.data : undefined,
    error: current ? inner.error : undefined,
    loading: !current || !inner.settled,
    updatedAt: current ? inner.updatedAt : null,
    refresh,
  };
}
