/**
 * A latency pair: one contender, one fault kind, every outage of the plan; the latency of each from the restore
 * to the task started.
 */
import * as Effect from "effect/Effect"
import { performance } from "node:perf_hooks"
import type { Contender } from "../contenders/Contender.js"
import { type Fault, type Outage, type Settings } from "./plan.js"
import { rig, warmUp } from "./rig.js"

// -------------------------------------------------------------------------------------------------
// Latency pairs
// -------------------------------------------------------------------------------------------------

export interface Measured {
  readonly outage: number
  /** The planned length, ms. */
  readonly length: number
  /** From the fault's start to its end as applied, ms. */
  readonly actualLength: number | undefined
  /** From the restore to the task's start, ms; `undefined` for a DNF. */
  readonly latency: number | undefined
  readonly status: "recovered" | "dnf" | "not-run"
  /** For a DNF: the worker's state at the bound. */
  readonly reason?: string | undefined
  /** What the worker's counters did from the fault's start to the task's start (or the bound), the ones that moved. */
  readonly events?: Readonly<Record<string, number>> | undefined
}

export interface PairResult {
  readonly contender: string
  readonly fault: Fault
  readonly warmUp: string | undefined
  readonly outages: ReadonlyArray<Measured>
  readonly stats: Readonly<Record<string, number>>
  readonly workerLogLines: number
  readonly lastWorkerLogLine: string | undefined
  readonly wallMs: number
}

// The counters that moved between two snapshots.
export const moved = (before: Readonly<Record<string, number>>, after: Readonly<Record<string, number>>) =>
  Object.fromEntries(
    Object.entries(after).flatMap(([key, value]) => {
      const delta = value - (before[key] ?? 0)
      return delta === 0 ? [] : [[key, delta]]
    })
  )

export type Progress = (fault: Fault, contender: string, m: Measured) => Effect.Effect<void>

export const latencyPair = (
  contender: Contender,
  fault: Fault,
  plan: ReadonlyArray<Outage>,
  s: Settings,
  progress: Progress
) =>
  Effect.scoped(Effect.gen(function*() {
    const began = performance.now()
    const r = yield* rig(contender, `${contender.key}-${fault}`)
    const warm = yield* warmUp(r, s)
    const outages: Array<Measured> = []
    let dnfsInARow = 0
    for (const outage of plan) {
      if (dnfsInARow >= s.stuckAfter) {
        const m: Measured = {
          outage: outage.index,
          length: outage.length,
          actualLength: undefined,
          latency: undefined,
          status: "not-run",
          reason: `not run: still stuck after ${dnfsInARow} DNFs in a row`
        }
        outages.push(m)
        yield* progress(fault, contender.key, m)
        continue
      }
      yield* Effect.sleep(outage.gap)
      const statsBefore = yield* r.worker.stats
      yield* r.fault(fault)
      const faultAt = performance.now()
      const enqueueAfter = Math.round(outage.length * s.enqueueAt)
      yield* Effect.sleep(enqueueAfter)
      const id = yield* r.enqueue(`outage ${outage.index}`)
      yield* Effect.sleep(outage.length - enqueueAfter)
      yield* r.proxy.pass
      const restoredAt = performance.now()
      const startedAt = yield* r.awaitStart(id, restoredAt + s.bound)
      const events = moved(statsBefore, yield* r.worker.stats)
      let m: Measured
      if (startedAt === undefined) {
        const reason = yield* r.worker.describe
        // Cancelled, so it cannot be handed out later and slow down the next outage's task.
        yield* r.master.cancel(id)
        dnfsInARow++
        m = {
          outage: outage.index,
          length: outage.length,
          actualLength: restoredAt - faultAt,
          latency: undefined,
          status: "dnf",
          reason,
          events
        }
      } else {
        dnfsInARow = 0
        m = {
          outage: outage.index,
          length: outage.length,
          actualLength: restoredAt - faultAt,
          latency: startedAt - restoredAt,
          status: "recovered",
          events
        }
      }
      outages.push(m)
      yield* progress(fault, contender.key, m)
    }
    const logged = r.logged()
    return {
      contender: contender.key,
      fault,
      warmUp: warm,
      outages,
      stats: yield* r.worker.stats,
      workerLogLines: logged.lines,
      lastWorkerLogLine: logged.last,
      wallMs: performance.now() - began
    } satisfies PairResult
  }))
