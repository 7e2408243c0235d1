import '@testing-library/jest-dom/vitest';
import { cleanup } from '@testing-library/react';
import { afterEach } from 'vitest';

afterEach(() => {
  cleanup();
  sessionStorage.clear();
  window.history.replaceState(null, '', '/ui/');
});

// jsdom lays nothing out: scrolling is a no-op.
Element.prototype.scrollIntoView = function scrollIntoView() {
  // nothing to scroll
};
