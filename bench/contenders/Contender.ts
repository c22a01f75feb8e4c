/**
 * What the recovery benchmark drives: a worker that fetches tasks from a master
 * and says when it starts one. Each contender is a different way to write that
 * worker; the benchmark gives each the same master protocol, fault proxy and
 * outage schedule.
 */
import type * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type * as Master from "../../src/testing/Master.js"

/** What a contender's worker is started with. */
export interface StartOptions {
  /** `host:port` of the fault proxy in front of the master. */
  readonly address: string
  readonly nodeKey: string
  /** Called at the moment the worker's handler starts a task: the benchmark's clock. */
  readonly started: (taskId: string) => void
  /** Where the worker's own error lines go (counted by the benchmark, not printed). */
  readonly log: (line: string) => void
}

/** A running worker. It stops when the scope it was started in closes. */
export interface RunningWorker {
  /** Its state now, in a few words: the reason given when it did not recover. */
  readonly describe: Effect.Effect<string>
  /** Counters of what it did (failed fetches, reconnections, resets...), for the raw data. */
  readonly stats: Effect.Effect<Readonly<Record<string, number>>>
}

export interface Contender {
  /** Short key used in the data: "library", "plain", "go-model". */
  readonly key: string
  /** As a person reads it in a table. */
  readonly name: string
  /** The options of the embedded master it runs against, where they are not the defaults. */
  readonly master?: Master.Options | undefined
  readonly start: (options: StartOptions) => Effect.Effect<RunningWorker, unknown, Scope.Scope>
}
