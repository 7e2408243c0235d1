import { render, screen } from '@testing-library/react';
import { App } from '../App';
import { TOKEN_KEY } from '../auth/session';

/** Renders the app signed in (a token in sessionStorage) at `#/<path>`, once the header shows. */
export async function renderAt(path: string) {
  sessionStorage.setItem(TOKEN_KEY, 'test-token');
  window.history.replaceState(null, '', `/ui/#/${path.replace(/^\//, '')}`);
  const result = render(<App />);
  await screen.findByRole('button', { name: 'Sign out' });
  return result;
}
