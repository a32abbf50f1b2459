/** Packs and runs through the real executable: demo, supply-chain refusals, replay. */
import { mkdtemp, readFile, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { beforeAll, describe, expect, it } from 'vitest'
import { reach } from './helpers.ts'

const counter = fileURLToPath(new URL('../../../packs/examples/counter', import.meta.url))
let env: Record<string, string>
let home: string

beforeAll(async () => {
  home = await mkdtemp(join(os.tmpdir(), 'reach-cli-packs-'))
  env = { REACH_HOME: home }
})

describe('reach packs and runs', () => {
  it('demo needs no configuration and ends REPLAY_VERIFIED', async () => {
    const r = await reach(['demo'], { env })
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(/Run run_[0-9a-f]{20}: COMPLETED/)
    expect(r.stdout).toContain('REPLAY_VERIFIED')
    const again = await reach(['demo', '--json'], { env })
    expect(again.json.replay.verified).toBe(true)
    // Newest first.
    expect((await reach(['runs', 'list', '--json'], { env })).json.runs[0].run_id).toBe(again.json.record.run_id)
    expect(again.json.record.output_hash).toBe((await reach(['runs', 'list', '--json'], { env })).json.runs.find((x: any) => x.run_id !== again.json.record.run_id).output_hash)
  })

  it('an unsigned pack is refused by default; a revoked publisher is refused', async () => {
    const fresh = { REACH_HOME: await mkdtemp(join(os.tmpdir(), 'reach-cli-unsigned-')) }
    const unsigned = await reach(['run', counter, '--input', '[1,2]', '--json'], { env: fresh })
    expect(unsigned.json.error.code).toBe('RL-3005')
    expect((await reach(['runs', 'list', '--json'], { env: fresh })).json.runs).toEqual([])

    const key = join(fresh.REACH_HOME, 'pub.key')
    await reach(['keygen', '--publisher', '--output', key], { env: fresh })
    const built = await reach(['pack', 'build', counter, '--json'], { env: fresh })
    await reach(['pack', 'sign', built.json.cid, '--key', key], { env: fresh })
    expect((await reach(['run', built.json.cid, '--json'], { env: fresh })).json.error.code).toBe('RL-3006')
    await reach(['trust', 'add', key, '--name', 'me'], { env: fresh })
    const ok = await reach(['run', built.json.cid, '--input', '[1,2]', '--json'], { env: fresh })
    expect(ok.json.output).toMatchObject({ count: 2, sum: 3 })
    await reach(['trust', 'revoke', key], { env: fresh })
    expect((await reach(['run', built.json.cid, '--json'], { env: fresh })).json.error.code).toBe('RL-3007')
  })

  it('replay, verify-determinism and explain-failure on a recorded run; unknown run ids are RL-3019', async () => {
    const runs = (await reach(['runs', 'list', '--json'], { env })).json.runs
    const id = runs[0].run_id
    expect((await reach(['replay', id], { env })).stdout).toContain('REPLAY_VERIFIED')
    expect((await reach(['verify-determinism', id, '--n', '3', '--json'], { env })).json.verified).toBe(true)
    expect((await reach(['explain-failure', id], { env })).stdout).toContain('completed')
    const missing = await reach(['replay', 'run_00000000000000000000', '--json'], { env })
    expect(missing.json.error.code).toBe('RL-3019')
  })

  it('export, import into a second data dir (verified first), replay offline; a flipped byte is refused', async () => {
    const id = (await reach(['runs', 'list', '--json'], { env })).json.runs[0].run_id
    const car = join(home, 'run.car')
    expect((await reach(['export', id, '-o', car], { env })).code).toBe(0)
    // A node that runs only packs it trusts refuses the archive of an unknown publisher's pack…
    const strict = { REACH_HOME: await mkdtemp(join(os.tmpdir(), 'reach-cli-strict-')) }
    await writeFile(join(strict.REACH_HOME, 'policy.json'), JSON.stringify({ version: 1, verify_untrusted_packs: false }))
    expect((await reach(['import', car, '--json'], { env: strict })).json.error.code).toBe('RL-3006')
    // …while by default it imports it to verify only, says so, replays it, and still never runs it.
    const second = { REACH_HOME: await mkdtemp(join(os.tmpdir(), 'reach-cli-second-')) }
    const verifyOnly = await reach(['import', car], { env: second })
    expect(verifyOnly.stdout).toContain('imported to verify only')
    expect((await reach(['replay', id], { env: second })).stdout).toContain('REPLAY_VERIFIED')
    const cid = (await reach(['runs', 'list', '--json'], { env: second })).json.runs[0].artifact_hash
    expect((await reach(['run', cid, '--json'], { env: second })).json.error.code).toBe('RL-3006')
    expect((await reach(['import', car, '--json'], { env: second })).json.error.code).toBe('RL-1008')
    const publisher = JSON.parse(await readFile(join(home, 'keys', 'demo-publisher.key'), 'utf8')).public_key
    await reach(['trust', 'add', publisher, '--name', 'demo'], { env: strict })
    const trusted = await reach(['import', car, '--json'], { env: strict })
    expect(trusted.json.run_id).toBe(id)
    expect(trusted.json.pack_trusted).toBe(true)

    const bytes = await readFile(car)
    const third = { REACH_HOME: await mkdtemp(join(os.tmpdir(), 'reach-cli-third-')) }
    for (const at of [bytes.length - 40, Math.floor(bytes.length / 2), 120]) {
      const bad = Buffer.from(bytes)
      bad[at] = (bad[at] as number) ^ 1
      await writeFile(join(home, 'bad.car'), bad)
      const r = await reach(['import', join(home, 'bad.car'), '--json'], { env: third })
      expect(r.code, `byte ${at}`).not.toBe(0)
    }
    expect((await reach(['runs', 'list', '--json'], { env: third })).json.runs).toEqual([])
  })

  it('doctor reports a healthy node; gc keeps the newest runs; data-dir names the home', async () => {
    const d = await reach(['doctor', '--json'], { env })
    expect(d.json.healthy).toBe(true)
    expect(d.json.checks.map((c: { check: string }) => c.check)).toContain('sandbox')
    expect((await reach(['data-dir'], { env })).stdout.trim()).toBe(home)
    const before = (await reach(['runs', 'list', '--json'], { env })).json.runs.length
    expect(before).toBeGreaterThan(1)
    const g = await reach(['gc', '--keep-last', '1', '--json'], { env })
    expect(g.json.removed).toHaveLength(before - 1)
    expect((await reach(['runs', 'list', '--json'], { env })).json.runs).toHaveLength(1)
  })
})
