import { defineConfig } from 'vitest/config'
import PlainSummary from './test/plain-summary.ts'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default', new PlainSummary()]
  }
})
