import { describe, expect, it } from 'vitest';
import { allows, takeTokenFromFragment } from './session';

describe('takeTokenFromFragment', () => {
  it('takes #token= and strips it from the URL', () => {
    window.history.replaceState(null, '', '/ui/?x=1#token=abc.def');
    expect(takeTokenFromFragment()).toBe('abc.def');
    expect(window.location.href).not.toContain('abc.def');
    expect(window.location.pathname).toBe('/ui/');
    expect(window.location.search).toBe('?x=1');
    expect(window.location.hash).toBe('#/nodes');
  });

  it('leaves a route fragment alone', () => {
    window.history.replaceState(null, '', '/ui/#/views');
    expect(takeTokenFromFragment()).toBeNull();
    expect(window.location.hash).toBe('#/views');
  });
});

describe('allows (as the Gateway decides)', () => {
  it('grants exact rights and scope wildcards, qualifiers apart', () => {
    expect(allows(['admin:operate'], 'admin', 'operate')).toBe(true);
    expect(allows(['admin:read'], 'admin', 'operate')).toBe(false);
    expect(allows(['admin:*'], 'admin', 'operate')).toBe(true);
    expect(allows(['workflows:*'], 'workflows', 'transfer')).toBe(true);
    expect(allows(['workflows:*'], 'workflows', 'transfer:operate')).toBe(false);
    expect(allows(['workflows:*:operate'], 'workflows', 'transfer:operate')).toBe(true);
    expect(allows(['workflows:transfer:operate'], 'workflows', 'transfer:operate')).toBe(true);
    expect(allows(['runner'], 'runner', 'admin')).toBe(false);
  });
});
