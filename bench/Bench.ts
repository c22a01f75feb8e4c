/**
 * What every benchmark returns, and how the runner (`bench/run.ts`) turns the
 * results into `bench/results.json`, `bench/RESULTS.md` and one SVG per benchmark.
 */
import type * as Effect from "effect/Effect"

/** One measured target: what was aimed at, what was measured, met or missed. */
export interface Target {
  readonly name: string
  /** As a person reads it: "p50 < 1.5 s". */
  readonly target: string
  /** As measured: "0.84 s". */
  readonly measured: string
  readonly met: boolean
}

/** A table of the RESULTS.md page. */
export interface Table {
  readonly title: string
  readonly columns: ReadonlyArray<string>
  readonly rows: ReadonlyArray<ReadonlyArray<string | number>>
}

export interface Result {
  /** File-name friendly: "recovery", "overhead", "fleet", "soak", "virtual-time". */
  readonly name: string
  readonly title: string
  /** What was done, in a sentence or two: counts, faults, contenders. */
  readonly method: string
  readonly tables: ReadonlyArray<Table>
  readonly targets: ReadonlyArray<Target>
  /** A picture of the result, as an SVG document. */
  readonly svg: string
  /** The raw numbers, for results.json. */
  readonly data: unknown
  /** Findings worth a sentence: anomalies, caveats. */
  readonly notes?: ReadonlyArray<string> | undefined
}

export interface Options {
  /** Small counts, for CI: the benchmark must run and not break; its numbers are not the point. */
  readonly quick: boolean
}

/** A benchmark: runs, measures side by side in one run, and returns its result. It fails only when it breaks. */
export type Bench = (options: Options) => Effect.Effect<Result, unknown>
