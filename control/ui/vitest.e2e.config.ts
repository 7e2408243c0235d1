import { defineConfig } from 'vitest/config';

// End-to-end: drives Debian's Chromium (playwright-core) against a running Gateway named by
// CLOUDLYSIS_UI_URL and CLOUDLYSIS_UI_TOKEN. Node environment, one file, one browser, in order.
export default defineConfig({
  test: {
    environment: 'node',
    include: ['e2e/**/*.e2e.ts'],
    testTimeout: 120_000,
    hookTimeout: 60_000,
    fileParallelism: false,
    sequence: { concurrent: false },
    reporters: ['verbose'],
  },
});
