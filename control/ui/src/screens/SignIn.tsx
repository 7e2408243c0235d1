import { useId, useState, type SubmitEvent } from 'react';
import type { ApiProblem } from '../api/client';
import { ProblemAlert } from '../components/ProblemAlert';

export function SignIn({
  problem,
  busy,
  onSubmit,
}: {
  problem: ApiProblem | undefined;
  busy: boolean;
  onSubmit: (token: string) => void;
}) {
  const [token, setToken] = useState('');
  const id = useId();
  const submit = (e: SubmitEvent) => {
    e.preventDefault();
    const t = token.trim().replace(/^Bearer\s+/i, '');
    if (t !== '') onSubmit(t);
  };
  return (
    <main className="signin" aria-labelledby="signin-title">
      <form onSubmit={submit} className="card signin-card">
        <h1 id="signin-title">Sign in to Cloudlysis Control</h1>
        <p className="muted">
          Paste an operator token. <code>cloudlysis dev</code> prints a link that signs you in directly
          (<code>/ui/#token=…</code>).
        </p>
        <ProblemAlert problem={problem} />
        <label htmlFor={id}>Token</label>
        <textarea
          id={id}
          rows={4}
          value={token}
          onChange={(e) => setToken(e.target.value)}
          spellCheck={false}
          autoComplete="off"
          placeholder="eyJhbGciOi…"
        />
        <button type="submit" className="primary" disabled={busy || token.trim() === ''}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
        <p className="muted small">The token is kept in this tab only (session storage) and sent to the Gateway as a bearer token.</p>
      </form>
    </main>
  );
}
