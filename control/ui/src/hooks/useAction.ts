import { useCallback, useLayoutEffect, useRef, useState } from 'react';
import { toProblem, type ApiProblem } from '../api/client';

export interface ActionState<A extends unknown[], R> {
  pending: boolean;
  error: ApiProblem | undefined;
  result: R | undefined;
  /** Runs the action; resolves to its result, or undefined when it failed (see `error`). */
  run: (...args: A) => Promise<R | undefined>;
  reset: () => void;
}

/** State of one operator verb: pending while it runs, then its result or its problem. */
export function useAction<A extends unknown[], R>(fn: (...args: A) => Promise<R>): ActionState<A, R> {
  const fnRef = useRef(fn);
  useLayoutEffect(() => {
    fnRef.current = fn;
  });
  const [state, setState] = useState<{ pending: boolean; error?: ApiProblem; result?: R }>({ pending: false });
  const run = useCallback(async (...args: A) => {
    setState({ pending: true });
    try {
      const result = await fnRef.current(...args);
      setState({ pending: false, result });
      return result;
    } catch (err) {
      setState({ pending: false, error: toProblem(err) });
      return undefined;
    }
  }, []);
  const reset = useCallback(() => setState({ pending: false }), []);
  return { pending: state.pending, error: state.error, result: state.result, run, reset };
}
