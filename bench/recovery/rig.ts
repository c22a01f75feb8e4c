/**
 * One worker behind its own fault proxy, in front of its own embedded master, and its warm-up.
 */
import * as Effect from "effect/Effect"
import { performance } from "node:perf_hooks"
import { FaultProxy, Master } from "../../src/testing/index.js"
import type { Contender, RunningWorker } from "../contenders/Contender.js"
import { type Fault, seconds, type Settings } from "./plan.js"

// -------------------------------------------------------------------------------------------------
// One worker behind its own proxy
// -------------------------------------------------------------------------------------------------

export interface Rig {
  readonly master: Master.Master
  readonly proxy: FaultProxy.FaultProxy
  readonly worker: RunningWorker
  /** Enqueues a task on the master; returns its id. */
  readonly enqueue: (label: string) => Effect.Effect<string, Master.MasterError>
  /** The moment (`performance.now()`) the worker started the task, or `undefined` once `deadline` has passed. */
  readonly awaitStart: (id: string, deadline: number) => Effect.Effect<number | undefined>
  readonly fault: (kind: Fault) => Effect.Effect<void>
  readonly logged: () => { readonly lines: number; readonly last: string | undefined }
}

export const rig = (contender: Contender, nodeKey: string) =>
  Effect.gen(function*() {
    const master = yield* Master.make(contender.master)
    const proxy = yield* FaultProxy.make({ target: { host: "127.0.0.1", port: master.port } })
    const starts = new Map<string, number>()
    const waiters = new Map<string, (at: number) => void>()
    const logged = { lines: 0, last: undefined as string | undefined }
    const worker = yield* contender.start({
      address: proxy.address,
      nodeKey,
      started: (id) => {
        if (starts.has(id)) return
        const at = performance.now()
        starts.set(id, at)
        waiters.get(id)?.(at)
      },
      log: (line) => {
        logged.lines++
        logged.last = line
      }
    })
    const awaitStart = (id: string, deadline: number) =>
      Effect.async<number | undefined>((resume) => {
        const seen = starts.get(id)
        if (seen !== undefined) return resume(Effect.succeed(seen))
        const timer = setTimeout(() => {
          waiters.delete(id)
          resume(Effect.succeed(undefined))
        }, Math.max(0, deadline - performance.now()))
        waiters.set(id, (at) => {
          clearTimeout(timer)
          waiters.delete(id)
          resume(Effect.succeed(at))
        })
        return Effect.sync(() => {
          clearTimeout(timer)
          waiters.delete(id)
        })
      })
    return {
      master,
      proxy,
      worker,
      enqueue: (label) => master.enqueue({ payload: JSON.stringify({ label }) }),
      awaitStart,
      fault: (kind) => (kind === "reset" ? proxy.reset : proxy.blackhole),
      logged: () => ({ ...logged })
    } satisfies Rig
  })

// The warm-up: the worker connects and starts one task before anything fails.
export const warmUp = (r: Rig, s: Settings) =>
  Effect.gen(function*() {
    const id = yield* r.enqueue("warm-up")
    const at = yield* r.awaitStart(id, performance.now() + s.warmupBound)
    if (at === undefined) {
      yield* r.master.cancel(id)
      return `did not start its warm-up task within ${seconds(s.warmupBound)} (${yield* r.worker.describe})`
    }
    return undefined
  })
