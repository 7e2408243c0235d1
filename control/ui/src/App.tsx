import { Component, useCallback, useEffect, useMemo, useState, type ErrorInfo, type ReactNode } from 'react';
import { ApiProblem, createApiClient, toProblem } from './api/client';
import type { WhoAmI } from './api/types';
import { clearToken, loadToken, saveToken, takeTokenFromFragment } from './auth/session';
import { ProblemAlert } from './components/ProblemAlert';
import { Loading } from './components/Status';
import { formatTime } from './format';
import { href, useRoute, type Route } from './router';
import { Audit } from './screens/Audit';
import { Nodes } from './screens/Nodes';
import { Poison } from './screens/Poison';
import { RunnerDetail, Runners } from './screens/Runners';
import { SignIn } from './screens/SignIn';
import { Supervision } from './screens/Supervision';
import { Views } from './screens/Views';
import { InstanceDetail, Workflows } from './screens/Workflows';
import { SessionContext, type Session } from './session';

const NAV: { path: string; label: string }[] = [
  { path: 'nodes', label: 'Nodes' },
  { path: 'supervision', label: 'Supervision' },
  { path: 'poison', label: 'Poison' },
  { path: 'audit', label: 'Audit' },
  { path: 'views', label: 'Views' },
  { path: 'runners', label: 'Runners' },
  { path: 'workflows', label: 'Workflows' },
];

/** The token to start with: from `#token=` (then stripped from the URL), else the tab's storage. */
function initialToken(): string | null {
  const fromFragment = takeTokenFromFragment();
  if (fromFragment) {
    saveToken(fromFragment);
    return fromFragment;
  }
  return loadToken();
}

export function App({ baseUrl = '' }: { baseUrl?: string }) {
  const [token, setToken] = useState<string | null>(initialToken);
  const [who, setWho] = useState<WhoAmI | null>(null);
  const [problem, setProblem] = useState<ApiProblem | undefined>(undefined);
  const [checking, setChecking] = useState(token !== null);
  const [attempt, setAttempt] = useState(0);

  const signOut = useCallback((why?: ApiProblem) => {
    clearToken();
    setToken(null);
    setWho(null);
    setChecking(false);
    setProblem(why);
  }, []);

  const api = useMemo(
    () =>
      createApiClient({
        baseUrl,
        getToken: loadToken,
        onUnauthorized: (p) =>
          signOut(
            new ApiProblem({
              status: p.status,
              type: p.type,
              title: 'Signed out',
              detail: p.detail || 'The token was refused.',
              correlationId: p.correlationId,
            }),
          ),
      }),
    [baseUrl, signOut],
  );

  // Validate the token with whoami whenever it changes.
  useEffect(() => {
    if (token === null) return;
    let cancelled = false;
    api
      .whoami()
      .then((w) => {
        if (cancelled) return;
        setWho(w);
        setProblem(undefined);
        setChecking(false);
      })
      .catch((err: unknown) => {
        if (cancelled) return;
        const p = toProblem(err);
        // A 401 has signed out already; anything else keeps the token so "Try again" can work.
        if (p.status !== 401) setProblem(p);
        setChecking(false);
      });
    return () => {
      cancelled = true;
    };
  }, [api, token, attempt]);

  const signIn = (t: string) => {
    saveToken(t);
    setProblem(undefined);
    setChecking(true);
    setToken(t);
  };

  if (token === null) {
    return <SignIn problem={problem} busy={checking} onSubmit={signIn} />;
  }
  if (!who) {
    return (
      <main className="signin">
        <div className="card signin-card">
          <h1>Cloudlysis Control</h1>
          {checking ? <Loading what="your session" /> : <ProblemAlert problem={problem} />}
          {!checking && (
            <div className="actions">
              <button type="button" className="primary" onClick={() => {
                  setChecking(true);
                  setAttempt((a) => a + 1);
                }}>
                Try again
              </button>
              <button type="button" onClick={() => signOut()}>
                Sign out
              </button>
            </div>
          )}
        </div>
      </main>
    );
  }
  const session: Session = { api, who, signOut: () => signOut() };
  return (
    <SessionContext.Provider value={session}>
      <Shell />
    </SessionContext.Provider>
  );
}

function Shell() {
  const route = useRoute();
  const first = route.segments[0] ?? 'nodes';
  useEffect(() => {
    const item = NAV.find((n) => n.path === first);
    document.title = `${item ? item.label : 'Not found'} · Cloudlysis Control`;
  }, [first]);
  return (
    <>
      <a className="skip-link" href="#main" onClick={(e) => {
        e.preventDefault();
        document.getElementById('main')?.focus();
      }}>
        Skip to content
      </a>
      <header className="topbar">
        <div className="brand">
          <span className="logo" aria-hidden="true">◆</span> Cloudlysis Control
        </div>
        <nav aria-label="Screens">
          <ul>
            {NAV.map((n) => (
              <li key={n.path}>
                <a href={href([n.path])} aria-current={n.path === first ? 'page' : undefined}>
                  {n.label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <WhoBox />
      </header>
      <main id="main" tabIndex={-1}>
        <ErrorBoundary key={first}>
          <Screen route={route} />
        </ErrorBoundary>
      </main>
    </>
  );
}

function WhoBox() {
  return (
    <SessionContext.Consumer>
      {(s) =>
        s && (
          <div className="who" aria-label="Signed in">
            <span>
              <span className="muted small">Signed in as</span> <strong data-testid="subject">{s.who.subject}</strong>
              <span className="muted small"> · tenant</span> <strong>{s.who.tenant}</strong>
            </span>
            <details className="rights">
              <summary>Rights ({s.who.rights.length})</summary>
              <ul aria-label="Rights">
                {s.who.rights.map((r) => (
                  <li key={r}>
                    <code>{r}</code>
                  </li>
                ))}
              </ul>
              <p className="muted small">Expires {formatTime(s.who.expires_at_ms)}</p>
            </details>
            <button type="button" onClick={s.signOut}>
              Sign out
            </button>
          </div>
        )
      }
    </SessionContext.Consumer>
  );
}

function Screen({ route }: { route: Route }) {
  const [first, second, third] = route.segments;
  switch (first ?? 'nodes') {
    case 'nodes':
      return <Nodes />;
    case 'supervision':
      return <Supervision />;
    case 'poison':
      return <Poison />;
    case 'audit':
      return <Audit />;
    case 'views':
      return <Views />;
    case 'runners':
      return second ? <RunnerDetail key={second} node={second} /> : <Runners />;
    case 'workflows':
      return second && third ? <InstanceDetail key={`${second}/${third}`} name={second} id={third} /> : <Workflows />;
    default:
      return (
        <section>
          <h1>Not found</h1>
          <p>
            No screen at <code>{route.segments.join('/')}</code>. <a href={href(['nodes'])}>Go to Nodes</a>.
          </p>
        </section>
      );
  }
}

class ErrorBoundary extends Component<{ children: ReactNode }, { error: Error | null }> {
  override state: { error: Error | null } = { error: null };
  static getDerivedStateFromError(error: Error) {
    return { error };
  }
  override componentDidCatch(error: Error, info: ErrorInfo) {
    console.error('screen crashed', error, info.componentStack);
  }
  override render() {
    if (this.state.error) {
      return (
        <ProblemAlert
          problem={new ApiProblem({ status: 0, title: 'This screen failed', detail: this.state.error.message })}
        />
      );
    }
    return this.props.children;
  }
}
