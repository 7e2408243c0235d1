import { act, render, screen } from '@testing-library/react';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ApiProblem } from '../api/client';
import { usePoll } from './usePoll';

function Probe({ fn, interval, k = '' }: { fn: () => Promise<string>; interval: number | null; k?: string }) {
  const p = usePoll(fn, interval, { key: k });
  return (
    <div>
      <span data-testid="data">{p.loading ? 'loading' : (p.data ?? '')}</span>
      <span data-testid="error">{p.error?.detail ?? ''}</span>
    </div>
  );
}

let visibility: DocumentVisibilityState = 'visible';

beforeEach(() => {
  vi.useFakeTimers({ shouldAdvanceTime: true });
  visibility = 'visible';
  vi.spyOn(document, 'visibilityState', 'get').mockImplementation(() => visibility);
});

afterEach(() => {
  vi.useRealTimers();
});

function setVisibility(v: DocumentVisibilityState) {
  visibility = v;
  document.dispatchEvent(new Event('visibilitychange'));
}

describe('usePoll', () => {
  it('polls after each answer, stops while the tab is hidden, and fetches when it shows', async () => {
    let n = 0;
    const fn = vi.fn(() => Promise.resolve(`answer ${String(++n)}`));
    render(<Probe fn={fn} interval={1000} />);
    expect(await screen.findByText('answer 1')).toBeInTheDocument();
    await act(() => vi.advanceTimersByTimeAsync(1000));
    expect(screen.getByTestId('data')).toHaveTextContent('answer 2');

    act(() => setVisibility('hidden'));
    await act(() => vi.advanceTimersByTimeAsync(5000));
    expect(fn).toHaveBeenCalledTimes(2);

    await act(async () => {
      setVisibility('visible');
      await vi.advanceTimersByTimeAsync(0);
    });
    expect(fn).toHaveBeenCalledTimes(3);
    expect(screen.getByTestId('data')).toHaveTextContent('answer 3');
  });

  it('keeps the last data when a refresh fails, and clears the error on the next success', async () => {
    let fail = false;
    const fn = vi.fn(() =>
      fail ? Promise.reject(new ApiProblem({ status: 503, title: 'Down', detail: 'gone' })) : Promise.resolve('ok'),
    );
    render(<Probe fn={fn} interval={1000} />);
    expect(await screen.findByText('ok')).toBeInTheDocument();
    fail = true;
    await act(() => vi.advanceTimersByTimeAsync(1000));
    expect(screen.getByTestId('error')).toHaveTextContent('gone');
    expect(screen.getByTestId('data')).toHaveTextContent('ok');
    fail = false;
    await act(() => vi.advanceTimersByTimeAsync(1000));
    expect(screen.getByTestId('error')).toHaveTextContent('');
  });

  it('fetches once without an interval, and again when the key changes', async () => {
    const fn = vi.fn((): Promise<string> => Promise.resolve('once'));
    const { rerender } = render(<Probe fn={fn} interval={null} k="a" />);
    expect(await screen.findByText('once')).toBeInTheDocument();
    await act(() => vi.advanceTimersByTimeAsync(10_000));
    expect(fn).toHaveBeenCalledTimes(1);
    rerender(<Probe fn={fn} interval={null} k="b" />);
    await act(() => vi.advanceTimersByTimeAsync(0));
    expect(fn).toHaveBeenCalledTimes(2);
  });
});
