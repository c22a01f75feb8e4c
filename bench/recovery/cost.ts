/**
 * What an outage costs: the connections a long outage makes reach the master's side, per minute, and the CPU of a
 * worker alone in its process while its master refuses it.
 */
import * as Effect from "effect/Effect"
import { performance } from "node:perf_hooks"
import { Master } from "../../src/testing/index.js"
import { start as startChild } from "../child.js"
import type { Contender } from "../contenders/Contender.js"
import type { Fault, Settings } from "./plan.js"
import { rig, warmUp } from "./rig.js"

// -------------------------------------------------------------------------------------------------
// Cost pairs
// -------------------------------------------------------------------------------------------------

export interface CostResult {
  readonly contender: string
  readonly fault: Fault
  readonly warmUp: string | undefined
  readonly outageMs: number
  /** TCP connections the proxy accepted (refused ones included) in each full minute of the outage, or in the whole outage when shorter. */
  readonly acceptedPerWindow: ReadonlyArray<
    { readonly fromMs: number; readonly toMs: number; readonly accepted: number }
  >
  readonly acceptedTotal: number
  readonly perMinute: number
  /** Sockets the proxy still held open when the outage ended. */
  readonly openAtEnd: number
  /** The restore to the start of the task enqueued 45 % into the long outage; `undefined` when not measured or DNF. */
  readonly recovery: number | undefined
  readonly recoveryStatus: "recovered" | "dnf" | "not-measured"
  readonly reason?: string | undefined
  readonly statsDuring: Readonly<Record<string, number>>
}

export const costPair = (contender: Contender, fault: Fault, s: Settings) =>
  Effect.scoped(Effect.gen(function*() {
    const r = yield* rig(contender, `${contender.key}-${fault}-cost`)
    const warm = yield* warmUp(r, s)
    yield* Effect.sleep(s.gap[0])
    const statsBefore = yield* r.worker.stats
    const windows: Array<{ fromMs: number; toMs: number; accepted: number }> = []
    const acceptedAtStart = yield* r.proxy.accepted
    yield* r.fault(fault)
    const faultAt = performance.now()
    // Sample the counter at each full minute, enqueue the task 45 % in, end the fault at the end.
    const enqueueAt = Math.round(s.longOutage * s.enqueueAt)
    const marks = Array.from({ length: Math.floor(s.longOutage / 60_000) }, (_, i) => (i + 1) * 60_000)
      .filter((t) => t < s.longOutage)
    let id: string | undefined
    let last = { at: 0, accepted: acceptedAtStart }
    const until = (t: number) => Effect.suspend(() => Effect.sleep(Math.max(0, faultAt + t - performance.now())))
    for (const t of [...new Set([enqueueAt, ...marks])].sort((a, b) => a - b)) {
      yield* until(t)
      if (t === enqueueAt) id = yield* r.enqueue("long outage")
      if (marks.includes(t)) {
        const accepted = yield* r.proxy.accepted
        windows.push({ fromMs: last.at, toMs: t, accepted: accepted - last.accepted })
        last = { at: t, accepted }
      }
    }
    yield* until(s.longOutage)
    const acceptedAtEnd = yield* r.proxy.accepted
    const openAtEnd = yield* r.proxy.connections
    windows.push({ fromMs: last.at, toMs: s.longOutage, accepted: acceptedAtEnd - last.accepted })
    const statsAfter = yield* r.worker.stats
    yield* r.proxy.pass
    const restoredAt = performance.now()
    let recovery: number | undefined
    let recoveryStatus: CostResult["recoveryStatus"] = "not-measured"
    let reason: string | undefined
    if (s.longRecovery && id !== undefined) {
      const startedAt = yield* r.awaitStart(id, restoredAt + s.bound)
      if (startedAt === undefined) {
        recoveryStatus = "dnf"
        reason = yield* r.worker.describe
      } else {
        recoveryStatus = "recovered"
        recovery = startedAt - restoredAt
      }
    }
    const acceptedTotal = acceptedAtEnd - acceptedAtStart
    const statsDuring = Object.fromEntries(
      Object.entries(statsAfter).map(([key, value]) => [key, value - (statsBefore[key] ?? 0)])
    )
    return {
      contender: contender.key,
      fault,
      warmUp: warm,
      outageMs: s.longOutage,
      acceptedPerWindow: windows,
      acceptedTotal,
      perMinute: (acceptedTotal * 60_000) / s.longOutage,
      openAtEnd,
      recovery,
      recoveryStatus,
      reason,
      statsDuring
    } satisfies CostResult
  }))

// -------------------------------------------------------------------------------------------------
// A refused outage: a worker's CPU while nothing listens
// -------------------------------------------------------------------------------------------------

export interface RefusedResult {
  readonly contender: string
  readonly outageMs: number
  /** The worker process's CPU over the outage, in percent of one core. */
  readonly cpuPercent: number
  readonly attempts: number
}

// The worker alone in its own process (its CPU time is its own); the master here, stopped: its port refuses.
export const refusedCost = (contender: Contender, s: Settings) =>
  Effect.scoped(Effect.gen(function*() {
    const master = yield* Master.make()
    const child = yield* startChild(new URL("./refusedWorker.ts", import.meta.url), { core: undefined })
    yield* child.ask({
      cmd: "start",
      address: master.address,
      schedule: contender.key === "library" ? "default" : "previous"
    })
    yield* Effect.sleep(s.refusedSettle)
    yield* master.stop
    const before = yield* child.ask<{ at: number; cpuMs: number; dials: number }>({ cmd: "mark" })
    yield* Effect.sleep(s.refusedOutage)
    const after = yield* child.ask<{ at: number; cpuMs: number; dials: number }>({ cmd: "mark" })
    yield* child.ask({ cmd: "close" })
    return {
      contender: contender.key,
      outageMs: after.at - before.at,
      cpuPercent: ((after.cpuMs - before.cpuMs) / (after.at - before.at)) * 100,
      attempts: after.dials - before.dials
    } satisfies RefusedResult
  }))
