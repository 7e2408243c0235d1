// Where the UI keeps its token: sessionStorage, so it lives as long as the tab and no longer.

export const TOKEN_KEY = 'cloudlysis.token';

/** The token when storage is disabled (it then lives as long as the page). */
let memoryToken: string | null = null;

export function loadToken(): string | null {
  try {
    const t = sessionStorage.getItem(TOKEN_KEY);
    return t && t.trim() !== '' ? t : null;
  } catch {
    return memoryToken;
  }
}

export function saveToken(token: string): void {
  memoryToken = token;
  try {
    sessionStorage.setItem(TOKEN_KEY, token);
  } catch {
    // Storage disabled: the token lives in memory only.
  }
}

export function clearToken(): void {
  memoryToken = null;
  try {
    sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Nothing stored.
  }
}

/**
 * Takes a token from the URL fragment (`#token=<jwt>`, as `cloudlysis dev` prints it) and strips
 * it from the address bar and the history entry, so it is not left in the URL to be copied or
 * bookmarked. Any other fragment (`#/nodes`) is a route and is left alone.
 */
export function takeTokenFromFragment(loc: Location = window.location, hist: History = window.history): string | null {
  const hash = loc.hash.replace(/^#/, '');
  if (hash === '' || hash.startsWith('/')) return null;
  const params = new URLSearchParams(hash);
  const token = params.get('token');
  if (token === null || token.trim() === '') return null;
  hist.replaceState(hist.state, '', `${loc.pathname}${loc.search}#/nodes`);
  return token.trim();
}

/**
 * True when `rights` grant `<scope>:<name>`, the way the Gateway decides it: exactly, or through
 * `<scope>:*`, where `*` stands only for the first part of a qualified name
 * (`workflows:*:operate` grants `workflows:transfer:operate`).
 */
export function allows(rights: readonly string[], scope: string, name: string): boolean {
  const [base, qualifier] = splitOnce(name);
  return rights.some((r) => {
    const [s, n] = splitOnce(r);
    if (n === undefined || s !== scope) return false;
    const [nBase, nQualifier] = splitOnce(n);
    return (nBase === base || nBase === '*') && nQualifier === qualifier;
  });
}

function splitOnce(s: string): [string, string | undefined] {
  const i = s.indexOf(':');
  return i < 0 ? [s, undefined] : [s.slice(0, i), s.slice(i + 1)];
}
