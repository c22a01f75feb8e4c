/**
 * The recovery benchmark's plan: its settings, the seeded outage schedule every pair follows, and its contenders.
 */
import type { Contender } from "../contenders/Contender.js"
import { makeGoClientModel } from "../contenders/GoClientModel.js"
import { library, libraryKeepalive4s, libraryPrevious } from "../contenders/Library.js"
import { plain } from "../contenders/PlainGrpc.js"
import { seeded } from "../seeded.js"

// -------------------------------------------------------------------------------------------------
// Settings
// -------------------------------------------------------------------------------------------------

/** The seed of the outage schedule (the date of the seed's CLS-001 fix). */
export const seed = 20251021

export type Fault = "reset" | "blackhole"
export const faults: ReadonlyArray<Fault> = ["reset", "blackhole"]

export interface Settings {
  readonly outages: number
  /** Outage lengths are drawn uniformly from [min, max] ms. */
  readonly length: readonly [number, number]
  /** The time between one outage's end (task started, or DNF) and the next outage, drawn from [min, max] ms. */
  readonly gap: readonly [number, number]
  /** Where in the outage the task is enqueued. */
  readonly enqueueAt: number
  /** How long after the restore a task may take to start before it is a DNF. */
  readonly bound: number
  /** How long the worker may take to start its warm-up task, before the first outage. */
  readonly warmupBound: number
  /** After this many DNFs in a row, a pair's remaining outages are not run and count as DNF. */
  readonly stuckAfter: number
  /** The cost pairs' one long outage. */
  readonly longOutage: number
  /** Whether the cost pairs also wait for the task enqueued during the long outage. */
  readonly longRecovery: boolean
  /** How long a worker alone in its process is refused while its CPU is measured. */
  readonly refusedOutage: number
  /**
   * How long that worker runs connected first: a process just started spends its first seconds on deferred
   * compilation and garbage collection (60 to 90 ms of CPU in an idle one), a worker that has been running does not.
   */
  readonly refusedSettle: number
}

export const settings = (quick: boolean): Settings =>
  quick
    ? {
      outages: 2,
      length: [2_000, 4_000],
      gap: [1_000, 1_500],
      enqueueAt: 0.45,
      bound: 12_000,
      warmupBound: 15_000,
      stuckAfter: 3,
      longOutage: 10_000,
      longRecovery: false,
      refusedOutage: 10_000,
      refusedSettle: 2_000
    }
    : {
      outages: 20,
      length: [2_000, 20_000],
      gap: [3_000, 8_000],
      enqueueAt: 0.45,
      bound: 60_000,
      warmupBound: 30_000,
      stuckAfter: 3,
      longOutage: 120_000,
      longRecovery: true,
      refusedOutage: 120_000,
      refusedSettle: 15_000
    }

export interface Outage {
  readonly index: number
  /** How long the fault lasts, ms. */
  readonly length: number
  /** The pause before the fault begins, ms. */
  readonly gap: number
}

/** The outage schedule every pair follows: lengths and gaps from the seeded generator, whole 100 ms. */
export const schedule = (s: Settings, seedValue = seed): ReadonlyArray<Outage> => {
  const next = seeded(seedValue)
  const draw = ([min, max]: readonly [number, number]) => Math.round((min + next() * (max - min)) / 100) * 100
  return Array.from(
    { length: s.outages },
    (_, index) => ({ index: index + 1, length: draw(s.length), gap: draw(s.gap) })
  )
}

const goModel = makeGoClientModel({ seed })
/** The library also against a master whose keepalive is every 4 s: the detection its master's cost buys. */
export const contenders: ReadonlyArray<Contender> = [library, libraryKeepalive4s, plain, goModel]
/** The cost pairs also run the library with its previous reconnect schedule: "no more than before", side by side. */
export const costContenders: ReadonlyArray<Contender> = [library, libraryPrevious, plain, goModel]

/** A duration for the tables, in seconds. */
export const seconds = (ms: number) => `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`
