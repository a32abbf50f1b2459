/**
 * The pack sandbox lives in sandbox/; this path re-exports its public surface (sandbox/index.ts)
 * so `./sandbox.ts` imports keep working.
 */
export * from './sandbox/index.ts'
