/** The per-run facade over a VM. */
import type { JsonValue } from '../../protocol/canonical.ts'
import { ReachError } from '../../protocol/errors.ts'
import type { CallResult, Sandbox, StepResult } from './interface.ts'
import type { QuickJSSandbox } from './vm.ts'

/**
 * What a pool hands out for one run: lets go of the VM (and its whole WebAssembly instance) as
 * soon as the sandbox fails or is disposed, even if the caller keeps the object.
 */
export class PackSandbox implements Sandbox {
  private vm: QuickJSSandbox | undefined
  private fuel = 0
  private failure: ReachError | undefined

  constructor (vm: QuickJSSandbox) {
    this.vm = vm
  }

  get fuelUsed (): number {
    return this.vm?.fuelUsed ?? this.fuel
  }

  call (fn: 'init' | 'reduce', args: JsonValue[]): CallResult {
    return this.guard((vm) => vm.call(fn, args))
  }

  begin (input: JsonValue): number {
    return this.guard((vm) => vm.begin(input))
  }

  step (eventText: string): StepResult {
    return this.guard((vm) => vm.step(eventText))
  }

  watch (cancel: Int32Array): void {
    if (this.vm !== undefined) this.vm.cancelFlag = cancel
  }

  private guard<T> (body: (vm: QuickJSSandbox) => T): T {
    if (this.failure !== undefined) throw this.failure
    const vm = this.vm
    if (vm === undefined) throw new Error('sandbox is disposed')
    try {
      return body(vm)
    } catch (err) {
      if (vm.failed && err instanceof ReachError) {
        this.failure = err
        this.dispose()
      }
      throw err
    }
  }

  dispose (): void {
    if (this.vm === undefined) return
    this.fuel = this.vm.fuelUsed
    // The VM goes back to its pool: the next run's flag is its own.
    this.vm.cancelFlag = undefined
    this.vm.dispose()
    this.vm = undefined
  }
}
