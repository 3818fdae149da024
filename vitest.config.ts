import { defineConfig } from 'vitest/config'

/** Every test timeout is multiplied by PCL_TEST_TIMEOUT_SCALE (default 1), for slow or busy machines. */
const scale = Number(process.env.PCL_TEST_TIMEOUT_SCALE ?? 1)

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000 * scale,
    hookTimeout: 30_000 * scale,
    pool: 'forks',
    // End-to-end tests start real processes; two cores run two files at a time.
    maxWorkers: 2,
  },
})
