/**
 * A circuit breaker for calls: after `threshold` consecutive transient
 * failures it opens and fails calls fast with `BreakerOpen`; after a delay from
 * its schedule it half-opens and lets one trial call through; a success closes
 * it, a failure opens it again for the schedule's next delay.
 *
 * It guards calls only. The connection's reconnect loop never consults it: a
 * breaker that could drop reconnect triggers could leave a worker dead.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberHandle from "effect/FiberHandle"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import type * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import { formatMillis } from "./internal/shared/format.js"
import * as Stepper from "./internal/shared/stepper.js"
import * as Validate from "./internal/shared/validate.js"
import * as Metrics from "./Metrics.js"
import * as Retry from "./Retry.js"

/**
 * @since 0.1.0
 * @category models
 */
export type BreakerState = Data.TaggedEnum<{
  /** Calls pass; `failures` consecutive transient failures so far. */
  Closed: { readonly failures: number }
  /** Calls fail fast until `until` (epoch millis). */
  Open: { readonly since: number; readonly until: number }
  /** One trial call may pass; `trial` says whether it is under way. */
  HalfOpen: { readonly trial: boolean }
}>

/**
 * @since 0.1.0
 * @category models
 */
export const BreakerState = Data.taggedEnum<BreakerState>()

/**
 * A call refused by an open breaker, or by a half-open one whose trial call is under way.
 *
 * @since 0.1.0
 * @category errors
 */
export class BreakerOpen extends Data.TaggedError("BreakerOpen")<{
  readonly reason: "Open" | "TrialUnderWay"
  /** When the breaker half-opens (epoch millis), if known. */
  readonly until: number | undefined
}> {
  override get message() {
    return this.reason === "Open"
      ? `circuit breaker open until ${new Date(this.until ?? 0).toISOString()}`
      : "circuit breaker half-open, its trial call is under way"
  }
}

/**
 * Is this a `BreakerOpen`?
 *
 * @since 0.3.0
 * @category guards
 */
export const isBreakerOpen = (u: unknown): u is BreakerOpen => Predicate.isTagged(u, "BreakerOpen")

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Consecutive counted failures that open the breaker. Default 5. */
  readonly threshold?: number | undefined
  /** Delays before each half-open, restarting when the breaker closes. Default exponential from 1 s, x2, capped at 30 s, jittered. */
  readonly halfOpenAfter?: Schedule.Schedule<unknown, unknown> | undefined
  /** Which failures count. Default `Retry.isTransient`: a master that answers with an error is not down. */
  readonly counts?: ((error: unknown) => boolean) | undefined
}

/**
 * The shape of the default half-open delay: `Retry.backoff` from 1 s, capped at 30 s.
 *
 * @since 0.1.0
 * @category constants
 */
export const halfOpenBackoff = { base: Duration.seconds(1), cap: Duration.seconds(30) } as const

/**
 * The defaults of {@link Options}.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaults = {
  threshold: 5,
  halfOpenAfter: Retry.backoff(halfOpenBackoff) as Schedule.Schedule<unknown, unknown>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Breaker {
  readonly state: Effect.Effect<BreakerState>
  /** The state now, then every change. */
  readonly changes: Stream.Stream<BreakerState>
  /** Runs an effect through the breaker. */
  readonly protect: <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E | BreakerOpen, R>
}

/**
 * A breaker whose half-open timer lives in the current scope.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<Breaker, Validate.InvalidOption, Scope.Scope> =>
  Effect.gen(function*() {
    const threshold = yield* Validate.integer("breaker.threshold", options.threshold, defaults.threshold)
    const schedule = options.halfOpenAfter ?? defaults.halfOpenAfter
    const counts = options.counts ?? ((error: unknown) => Retry.isTransient(error))
    const state = yield* SubscriptionRef.make<BreakerState>(BreakerState.Closed({ failures: 0 }))
    const halfOpenDelays = yield* Stepper.make(schedule)
    const timer = yield* FiberHandle.make()
    const log = (message: string) => Effect.logWarning(message).pipe(Effect.annotateLogs({ module: "Breaker" }))

    const open = (failures: number) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const delay = Option.getOrElse(yield* halfOpenDelays.next(undefined), () => 0)
        yield* FiberHandle.run(
          timer,
          Effect.sleep(delay).pipe(
            Effect.zipRight(SubscriptionRef.set(state, BreakerState.HalfOpen({ trial: false }))),
            Effect.zipRight(log("circuit breaker half-open: the next call is a trial"))
          )
        )
        yield* log(
          `circuit breaker open after ${failures} consecutive transient failures; half-open in ${formatMillis(delay)}`
        )
        return BreakerState.Open({ since: now, until: now + delay })
      })

    // Who may pass: the state is read and the trial claimed in one step.
    const admit = SubscriptionRef.modify(state, (current): readonly [BreakerOpen | "trial" | "pass", BreakerState] => {
      switch (current._tag) {
        case "Closed":
          return ["pass", current]
        case "Open":
          return [new BreakerOpen({ reason: "Open", until: current.until }), current]
        case "HalfOpen":
          return current.trial
            ? [new BreakerOpen({ reason: "TrialUnderWay", until: undefined }), current]
            : ["trial", BreakerState.HalfOpen({ trial: true })]
      }
    })

    const close = (current: BreakerState) =>
      current._tag === "Closed" && current.failures === 0
        ? Effect.succeed(current)
        : Effect.gen(function*() {
          yield* FiberHandle.clear(timer)
          yield* halfOpenDelays.reset
          if (current._tag !== "Closed") yield* log("circuit breaker closed")
          return BreakerState.Closed({ failures: 0 })
        })

    const next = <A, E>(current: BreakerState, exit: Exit.Exit<A, E>, trial: boolean): Effect.Effect<BreakerState> => {
      if (Exit.isSuccess(exit)) return close(current)
      const failure = Cause.failureOption(exit.cause)
      // Interrupted or died: nothing learned about the master; a trial may be claimed again.
      if (Option.isNone(failure)) return Effect.succeed(trial ? BreakerState.HalfOpen({ trial: false }) : current)
      // An answer from the master, even an error, shows it is up.
      if (!counts(failure.value)) return close(current)
      if (trial) return open(1)
      if (current._tag !== "Closed") return Effect.succeed(current)
      const failures = current.failures + 1
      return failures >= threshold ? open(failures) : Effect.succeed(BreakerState.Closed({ failures }))
    }

    // A success on a closed breaker with no failures changes nothing: the common case takes no lock.
    const quiet = (current: BreakerState) => current._tag === "Closed" && current.failures === 0

    const protect = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E | BreakerOpen, R> =>
      Effect.flatMap(SubscriptionRef.get(state), (seen): Effect.Effect<A, E | BreakerOpen, R> =>
        seen._tag === "Closed"
          ? quiet(seen)
            ? Effect.tapErrorCause(self, (cause) => settle(Exit.failCause(cause), false))
            : Effect.onExit(self, (exit) => settle(exit, false))
          : Effect.flatMap(admit, (admission): Effect.Effect<A, E | BreakerOpen, R> =>
            admission instanceof BreakerOpen
              ? Effect.fail(admission)
              // A trial must give its claim back even when interrupted.
              : Effect.onExit(self, (exit) => settle(exit, admission === "trial"))))

    const settle = <A, E>(exit: Exit.Exit<A, E>, trial: boolean) =>
      SubscriptionRef.modifyEffect(
        state,
        (current) => Effect.map(next(current, exit, trial), (state) => [undefined, state] as const)
      )

    yield* state.changes.pipe(
      Stream.runForEach((current) =>
        Metrics.oneHot(Metrics.breakerState, ["Closed", "Open", "HalfOpen"], current._tag)
      ),
      Effect.forkScoped
    )

    return { state: SubscriptionRef.get(state), changes: state.changes, protect } satisfies Breaker
  })
