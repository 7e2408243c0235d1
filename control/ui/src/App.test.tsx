import { render, screen, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it } from 'vitest';
import { App } from './App';
import { TOKEN_KEY } from './auth/session';
import { problem, stubGateway, WHO } from './test/gateway';
import { renderAt } from './test/render';

describe('sign-in', () => {
  it('takes the token from #token=, strips it and shows who is signed in', async () => {
    const gw = stubGateway({ 'GET /admin/nodes': { nodes: [] } });
    window.history.replaceState(null, '', '/ui/#token=eyJ.fragment.sig');
    render(<App />);
    const who = await screen.findByLabelText('Signed in');
    expect(within(who).getByText('dev')).toBeInTheDocument();
    expect(within(who).getByText('demo')).toBeInTheDocument();
    expect(within(who).getByRole('list', { name: 'Rights' })).toHaveTextContent('admin:operate');
    expect(window.location.href).not.toContain('eyJ.fragment.sig');
    expect(sessionStorage.getItem(TOKEN_KEY)).toBe('eyJ.fragment.sig');
    expect(gw.callsTo('GET /admin/whoami')[0]?.headers.get('authorization')).toBe('Bearer eyJ.fragment.sig');
    expect(await screen.findByRole('heading', { level: 1, name: 'Nodes' })).toBeInTheDocument();
  });

  it('signs in with a pasted token, and shows the problem of a refused one', async () => {
    const user = userEvent.setup();
    stubGateway({
      'GET /admin/whoami': (call) =>
        call.headers.get('authorization') === 'Bearer good'
          ? WHO
          : problem(401, 'Unauthorized', 'token signature is invalid'),
      'GET /admin/nodes': { nodes: [] },
    });
    render(<App />);
    await user.type(screen.getByLabelText('Token'), 'bad');
    await user.click(screen.getByRole('button', { name: 'Sign in' }));
    const alert = await screen.findByRole('alert');
    expect(alert).toHaveTextContent('token signature is invalid');
    expect(sessionStorage.getItem(TOKEN_KEY)).toBeNull();

    await user.clear(screen.getByLabelText('Token'));
    await user.type(screen.getByLabelText('Token'), 'Bearer good');
    await user.click(screen.getByRole('button', { name: 'Sign in' }));
    expect(await screen.findByLabelText('Signed in')).toHaveTextContent('dev');
    expect(sessionStorage.getItem(TOKEN_KEY)).toBe('good');
  });

  it('signs out', async () => {
    const user = userEvent.setup();
    stubGateway({ 'GET /admin/nodes': { nodes: [] } });
    await renderAt('nodes');
    await user.click(screen.getByRole('button', { name: 'Sign out' }));
    expect(screen.getByRole('heading', { name: 'Sign in to Cloudlysis Control' })).toBeInTheDocument();
    expect(sessionStorage.getItem(TOKEN_KEY)).toBeNull();
  });

  it('goes back to sign-in when a screen gets a 401', async () => {
    stubGateway({ 'GET /admin/nodes': problem(401, 'Unauthorized', 'token expired') });
    sessionStorage.setItem(TOKEN_KEY, 'old');
    window.history.replaceState(null, '', '/ui/#/nodes');
    render(<App />);
    expect(await screen.findByRole('heading', { name: 'Sign in to Cloudlysis Control' })).toBeInTheDocument();
    expect(screen.getByRole('alert')).toHaveTextContent('token expired');
    expect(sessionStorage.getItem(TOKEN_KEY)).toBeNull();
  });

  it('keeps the token and offers a retry when the Gateway is down', async () => {
    const user = userEvent.setup();
    const gw = stubGateway({ 'GET /admin/whoami': problem(503, 'Service Unavailable', 'starting up') });
    sessionStorage.setItem(TOKEN_KEY, 'tok');
    render(<App />);
    expect(await screen.findByRole('alert')).toHaveTextContent('starting up');
    gw.set({ 'GET /admin/whoami': WHO, 'GET /admin/nodes': { nodes: [] } });
    await user.click(screen.getByRole('button', { name: 'Try again' }));
    expect(await screen.findByLabelText('Signed in')).toHaveTextContent('dev');
  });
});

describe('shell', () => {
  it('shows an API error as title and detail, never a blank page', async () => {
    stubGateway({ 'GET /admin/audit': problem(403, 'Forbidden', 'missing right `admin:read`') });
    await renderAt('audit');
    const alert = await screen.findByRole('alert');
    expect(alert).toHaveTextContent('Forbidden');
    expect(alert).toHaveTextContent('missing right `admin:read`');
    expect(screen.getByRole('heading', { level: 1, name: 'Audit' })).toBeInTheDocument();
  });

  it('marks the current screen in the navigation', async () => {
    stubGateway({ 'GET /admin/audit': { entries: [], next_cursor: null } });
    await renderAt('audit');
    const nav = screen.getByRole('navigation', { name: 'Screens' });
    expect(within(nav).getByRole('link', { name: 'Audit' })).toHaveAttribute('aria-current', 'page');
    expect(await screen.findByText('No audit entries')).toBeInTheDocument();
  });
});
