/**
 * Which failures are worth another try, decided by their type, and the
 * schedules that space the tries.
 *
 * @since 0.1.0
 */
import * as grpc from "@grpc/grpc-js"
import * as Config from "effect/Config"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { dual, pipe } from "effect/Function"
import * as Metric from "effect/Metric"
import * as Predicate from "effect/Predicate"
import * as Random from "effect/Random"
import * as Schedule from "effect/Schedule"
import * as ScheduleDecision from "effect/ScheduleDecision"
import * as Interval from "effect/ScheduleInterval"
import * as GrpcError from "./GrpcError.js"
import * as Cfg from "./internal/shared/config.js"
import { errorMessage, formatMillis } from "./internal/shared/format.js"
import { retrying } from "./internal/shared/retrying.js"
import * as Metrics from "./Metrics.js"

/**
 * What a classification may know about the call that failed.
 *
 * @since 0.1.0
 * @category models
 */
export interface CallTraits {
  /** Repeating the call has no further effect: DEADLINE_EXCEEDED may then be retried. */
  readonly idempotent?: boolean | undefined
}

const field = (error: unknown, name: string): unknown =>
  Predicate.hasProperty(error, name) ? (error as Record<string, unknown>)[name] : undefined

/**
 * Is this failure worth another try? Decided by type, never by message text:
 *
 * - `GrpcError` with UNAVAILABLE, RESOURCE_EXHAUSTED (not a message over a size
 *   limit: `tooLarge`), ABORTED or CANCELLED (only a server's: ours are never
 *   surfaced): yes;
 *   DEADLINE_EXCEEDED only for idempotent calls; INTERNAL only for a reset stream.
 * - `ClientUnavailable` with reason `Timeout`: yes (the connection may come back).
 * - anything else, `ClientUnavailable` with reason `Closed`, `Rejected` or
 *   `UnknownService`, and every defect: no.
 *
 * @since 0.1.0
 * @category classification
 */
export const isTransient = (error: unknown, traits: CallTraits = {}): boolean => {
  switch (field(error, "_tag")) {
    case "GrpcError": {
      // A message over a size limit is RESOURCE_EXHAUSTED too, and will be over it again.
      if (field(error, "tooLarge") !== undefined) return false
      switch (GrpcError.meaningOf(field(error, "code") as grpc.status).retry) {
        case "yes":
          return true
        case "idempotent":
          return traits.idempotent === true
        case "reset":
          return typeof field(error, "rstCode") === "number"
        case "no":
          return false
      }
    }
    case "ClientUnavailable":
      return field(error, "reason") === "Timeout"
    default:
      return false
  }
}

/**
 * May a call that failed this way be tried again? Only a transient failure,
 * and only when the call is idempotent or the request was never sent.
 *
 * @since 0.1.0
 * @category classification
 */
export const isRetryable = (error: unknown, traits: CallTraits = {}): boolean =>
  isTransient(error, traits) &&
  (traits.idempotent === true || field(error, "_tag") !== "GrpcError" || field(error, "beforeSend") === true)

const capped = (cap: Duration.DurationInput) => <Out, In, R>(self: Schedule.Schedule<Out, In, R>) =>
  Schedule.modifyDelay(self, (_, delay) => Duration.min(delay, cap))

// Whole milliseconds: the clock ticks in them, and fractional instants make `Schedule.fixed` spin under TestClock.
const wholeMillis = <Out, In, R>(self: Schedule.Schedule<Out, In, R>) =>
  Schedule.modifyDelay(self, (_, delay) => Duration.millis(Math.round(Duration.toMillis(delay))))

/**
 * What a failed connection attempt cost the master, as the default
 * reconnection schedule reads it:
 *
 * - `Cheap`: `Refused`, `HostUnreachable`, `NameNotResolved`. The master
 *   spent nothing on it (its kernel refused the connection, or nothing reached
 *   it): try again soon.
 * - `Costly`: everything else. A connect timeout or a failed readiness may be
 *   a master too busy to answer, a TLS refusal cost it a handshake, and a
 *   failure not named may be either: back off.
 *
 * @since 0.2.0
 * @category classification
 */
export const reconnectCost = (error: unknown): "Cheap" | "Costly" =>
  field(error, "_tag") === "ConnectError" && cheapReasons.has(field(error, "reason")) ? "Cheap" : "Costly"

const cheapReasons: ReadonlySet<unknown> = new Set(["Refused", "HostUnreachable", "NameNotResolved"])

/**
 * The shape of a reconnection schedule: after a costly failure, exponential
 * backoff whose cap is short at the start of an outage, long once the outage
 * has lasted a while, and growing with it when it lasts long; after a cheap
 * one (see {@link reconnectCost}), the next attempt soon, then a share of the
 * outage so far.
 *
 * @since 0.1.0
 * @category models
 */
export interface ReconnectOptions {
  /** First delay. Default 500 ms. */
  readonly base?: Duration.DurationInput | undefined
  /** Growth per attempt. Default 2. */
  readonly factor?: number | undefined
  /** Cap while the outage is young. Default 2 s. */
  readonly shortCap?: Duration.DurationInput | undefined
  /** How long the outage is young. Default 1 minute. */
  readonly shortPhase?: Duration.DurationInput | undefined
  /**
   * Cap once the outage is older. Default 30 s. Once `soonFraction` of the
   * outage so far is longer (after 16.7 minutes, by default), the cap is that
   * share, up to `maxCap`.
   */
  readonly longCap?: Duration.DurationInput | undefined
  /** Each delay is multiplied by a random factor in [min, max]. Default 0.8 to 1.2. */
  readonly jitter?: { readonly min: number; readonly max: number } | undefined
  /**
   * The shortest delay after a cheap failure. Default 250 ms.
   *
   * @since 0.2.0
   */
  readonly soon?: Duration.DurationInput | undefined
  /**
   * After a cheap failure, the delay is this share of the outage so far when
   * that is longer than `soon`: the later in an outage, the less likely the
   * next moment ends it. Default 0.03 (3 %: 300 ms 10 s into an outage, 1.8 s
   * a minute into it).
   *
   * @since 0.2.0
   */
  readonly soonFraction?: number | undefined
  /**
   * The longest delay after a cheap failure. Default: the costly one's
   * longest, `maxCap` (or `longCap` when that is above it), 2 minutes by
   * default: a cheap failure never waits longer than a costly one would (the
   * costly cap grows with the same share of the outage), and lowering
   * `maxCap` alone lowers both.
   *
   * @since 0.2.0
   */
  readonly soonCap?: Duration.DurationInput | undefined
  /**
   * How far the long cap grows with a long outage. Default 2 minutes, the
   * maximum backoff of gRPC's own connection-backoff spec, reached 67 minutes
   * into an outage (3 % of it). A `longCap` above it is kept as it is.
   *
   * @since 0.3.0
   */
  readonly maxCap?: Duration.DurationInput | undefined
}

/**
 * The defaults of {@link ReconnectOptions}.
 *
 * @since 0.1.0
 * @category constants
 */
export const reconnectDefaults = {
  base: Duration.millis(500),
  factor: 2,
  shortCap: Duration.seconds(2),
  shortPhase: Duration.minutes(1),
  longCap: Duration.seconds(30),
  jitter: { min: 0.8, max: 1.2 },
  soon: Duration.millis(250),
  soonFraction: 0.03,
  soonCap: Duration.minutes(2),
  maxCap: Duration.minutes(2)
} as const

interface ReconnectState {
  /** When the first failure of the outage happened. */
  readonly since: number | undefined
  /** Failures in the young outage. */
  readonly young: number
  /** Failures once the outage is older. */
  readonly old: number
}

/**
 * A reconnection schedule of the given shape, forever. Its input is the
 * failed attempt's error (a `ConnectError`); any other input is costly.
 *
 * Every failure counts toward the backoff, cheap or costly, so a costly
 * failure late in an outage waits as long as it would have had every failure
 * before it been costly: a fleet that was refused while its master restarted
 * and then times out against it backs off as if it had timed out all along.
 * The caps apply before the jitter, so a fleet at the cap stays spread out.
 *
 * @since 0.1.0
 * @category schedules
 */
export const reconnectWith = (options: ReconnectOptions = {}): Schedule.Schedule<Duration.Duration, unknown> => {
  const factor = options.factor ?? reconnectDefaults.factor
  const base = Duration.toMillis(options.base ?? reconnectDefaults.base)
  const shortCap = Duration.toMillis(options.shortCap ?? reconnectDefaults.shortCap)
  const shortPhase = Duration.toMillis(options.shortPhase ?? reconnectDefaults.shortPhase)
  const longCap = Duration.toMillis(options.longCap ?? reconnectDefaults.longCap)
  const soon = Duration.toMillis(options.soon ?? reconnectDefaults.soon)
  const soonFraction = options.soonFraction ?? reconnectDefaults.soonFraction
  const maxCap = Duration.toMillis(options.maxCap ?? reconnectDefaults.maxCap)
  const soonCap = options.soonCap === undefined ? Math.max(longCap, maxCap) : Duration.toMillis(options.soonCap)
  const { max, min } = options.jitter ?? reconnectDefaults.jitter
  return Schedule.makeWithState<ReconnectState, unknown, Duration.Duration>(
    { since: undefined, young: 0, old: 0 },
    (now, error, state) =>
      Effect.map(Random.next, (random) => {
        const since = state.since ?? now
        const young = now - since < shortPhase
        // A share of the outage so far: a cheap failure's delay, and the long cap once it is the longer.
        const share = soonFraction * (now - since)
        // Cheap: soon, or the share. Costly, in a young outage: exponential from `base` to the short cap; then on
        // from the short cap to the long one, which grows with the share up to `maxCap`.
        const delay = reconnectCost(error) === "Cheap"
          ? Math.min(Math.max(soon, share), soonCap)
          : young
          ? Math.min(base * factor ** state.young, shortCap)
          : Math.min(shortCap * factor ** (state.old + 1), Math.max(longCap, Math.min(share, maxCap)))
        const jittered = Duration.millis(Math.round(delay * min * (1 - random) + delay * max * random))
        const next: ReconnectState = young
          ? { since, young: state.young + 1, old: 0 }
          : { since, young: state.young, old: state.old + 1 }
        return [
          next,
          jittered,
          ScheduleDecision.continueWith(Interval.after(now + Duration.toMillis(jittered)))
        ] as const
      })
  )
}

/**
 * The default reconnection schedule, by what each failure cost the master
 * ({@link reconnectCost}): after a cheap failure (refused, host unreachable,
 * name not resolved) the next attempt in 250 ms, or 3 % of the outage so far
 * when that is longer, up to 2 minutes; after a costly one (a connect timeout,
 * a failed readiness, a TLS refusal), exponential from 500 ms, factor 2,
 * capped at 2 s during the first minute, at 30 s after it, and at 3 % of the
 * outage once that is longer (after 16.7 minutes), up to 2 minutes. Every
 * delay is jittered by 0.8 to 1.2; forever.
 *
 * Attempts in an outage (50 jitter seeds, median): against a refused master,
 * 101 in the first minute, 192 in 15 minutes, 239 in an hour (236 to 242), 449
 * in 8 hours, 929 in a day; against connect timeouts of 3 s, 13, 41, 85, 290
 * and 759. With a 30 s cap (`maxCap` and `soonCap` 30 s) nothing differs
 * until 16.7 minutes; after, it makes 282 and 123 attempts in an hour, 3042
 * and 2632 in a day. 0.2 capped a cheap failure's delay at 4 s: about 995
 * attempts an hour against a refused master, 21,700 a day
 * (`maxCap: "30 seconds"`, `soonCap: "4 seconds"` give that schedule back).
 *
 * The 2-minute cap is gRPC's own connection backoff's. What it gains: a master
 * down for hours is tried 30 times an hour, not 120, and a fleet that waited
 * through a long outage comes back spread over about two minutes, not 30
 * seconds (1000 workers: 8 connections a second instead of 33). What it costs:
 * the wait after the master is back grows with the outage, up to 3 % of it
 * (jittered, 3.6 %): about 54 s on average after an hour's outage, against
 * 15 s with a 30 s cap and about 2 s with 0.2's 4 s cap. Outages of up to
 * about 2 minutes (a restart, a blip, a deploy) are tried as in 0.2.
 *
 * @since 0.1.0
 * @category schedules
 */
export const reconnect: Schedule.Schedule<Duration.Duration, unknown> = reconnectWith()

/**
 * Exponential backoff from `base`, times `factor` per step, capped at `cap`,
 * each delay jittered by 0.8 to 1.2, forever: the shape of every wait in this
 * library that is not a reconnection (call retries, the Rejected back-off,
 * the breaker's half-open delay, re-joining the master).
 *
 * @since 0.1.0
 * @category schedules
 */
export const backoff = (options: {
  readonly base: Duration.DurationInput
  readonly cap: Duration.DurationInput
  readonly factor?: number | undefined
}): Schedule.Schedule<Duration.Duration, unknown> =>
  pipe(Schedule.exponential(options.base, options.factor ?? 2), capped(options.cap), Schedule.jittered, wholeMillis)

/**
 * 500 ms, doubling to 10 s, jittered, forever: the wait between tries of what
 * a worker keeps until it is done (storing a report again, delivering it
 * again, joining the master again).
 *
 * @since 0.3.0
 * @category schedules
 */
export const untilDone: Schedule.Schedule<Duration.Duration, unknown> = backoff({
  base: "500 millis",
  cap: "10 seconds"
})

/**
 * The shape of the client lookup retry.
 *
 * @since 0.1.0
 * @category models
 */
export interface LookupOptions {
  /** Retries after the first lookup. Default 2 (3 attempts). */
  readonly retries?: number | undefined
  /** Time between attempts. Default 2 s. */
  readonly interval?: Duration.DurationInput | undefined
}

/**
 * The defaults of {@link LookupOptions}.
 *
 * @since 0.1.0
 * @category constants
 */
export const lookupDefaults = { retries: 2, interval: Duration.seconds(2) } as const

/**
 * A client lookup retry of the given shape.
 *
 * @since 0.1.0
 * @category schedules
 */
export const lookupWith = (options: LookupOptions = {}): Schedule.Schedule<number, unknown> =>
  Schedule.spaced(options.interval ?? lookupDefaults.interval).pipe(
    Schedule.intersect(Schedule.recurs(options.retries ?? lookupDefaults.retries)),
    Schedule.map(([n]) => n)
  )

/**
 * The client lookup retry: 3 attempts, 2 s apart.
 *
 * @since 0.1.0
 * @category schedules
 */
export const lookup: Schedule.Schedule<number, unknown> = lookupWith()

/**
 * The shape of the call retry.
 *
 * @since 0.1.0
 * @category models
 */
export interface CallRetryOptions {
  /** Retries after the first attempt. Default 4 (5 attempts). */
  readonly retries?: number | undefined
  /** First delay. Default 100 ms. */
  readonly base?: Duration.DurationInput | undefined
  /** Longest delay. Default 2 s. */
  readonly cap?: Duration.DurationInput | undefined
}

/**
 * The defaults of {@link CallRetryOptions}.
 *
 * @since 0.1.0
 * @category constants
 */
export const callDefaults = { retries: 4, base: Duration.millis(100), cap: Duration.seconds(2) } as const

/**
 * A call retry of the given shape: {@link backoff} for at most `retries` retries.
 *
 * @since 0.1.0
 * @category schedules
 */
export const callWith = (options: CallRetryOptions = {}): Schedule.Schedule<Duration.Duration, unknown> =>
  pipe(
    backoff({ base: options.base ?? callDefaults.base, cap: options.cap ?? callDefaults.cap }),
    Schedule.intersect(Schedule.recurs(options.retries ?? callDefaults.retries)),
    Schedule.map(([delay]) => delay)
  )

/**
 * The call retry: exponential from 100 ms, factor 2, capped at 2 s, jittered
 * by 0.8 to 1.2, at most 4 retries (5 attempts).
 *
 * @since 0.1.0
 * @category schedules
 */
export const call: Schedule.Schedule<Duration.Duration, unknown> = callWith()

/**
 * Retries an effect on `schedule` while its failure is retryable (see
 * {@link isRetryable}), and passes any other failure through at once. Every
 * retry and the give-up are logged with the reason and the attempt number.
 *
 * @since 0.1.0
 * @category combinators
 */
export const transient: {
  <Out, R2>(
    schedule: Schedule.Schedule<Out, unknown, R2>,
    traits?: CallTraits & { readonly label?: string | undefined }
  ): <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R | R2>
  <A, E, R, Out, R2>(
    self: Effect.Effect<A, E, R>,
    schedule: Schedule.Schedule<Out, unknown, R2>,
    traits?: CallTraits & { readonly label?: string | undefined }
  ): Effect.Effect<A, E, R | R2>
} = dual(
  (args) => Effect.isEffect(args[0]),
  <A, E, R, Out, R2>(
    self: Effect.Effect<A, E, R>,
    schedule: Schedule.Schedule<Out, unknown, R2>,
    traits: CallTraits & { readonly label?: string | undefined } = {}
  ): Effect.Effect<A, E, R | R2> => {
    const label = traits.label ?? "call"
    const giveUp = (error: E, attempts: number) => {
      const why = !isTransient(error, traits)
        ? "not transient"
        : isRetryable(error, traits)
        ? "retries exhausted"
        : "the request was sent and the call is not idempotent"
      return Effect.zipRight(
        Effect.logWarning(
          `${label}: giving up after ${attempts} attempt${attempts === 1 ? "" : "s"} (${why}): ${
            errorMessage(error, { tagged: true })
          }`
        ),
        Effect.fail(error)
      )
    }
    // A success costs nothing here: the schedule is driven only after a first failure.
    return Effect.catchAll(self, (first) => {
      if (!isRetryable(first, traits)) return giveUp(first, 1)
      let attempts = 1
      let replayed = false
      // The first failure is replayed into the schedule, so its delays run from it as from any other.
      const again = Effect.suspend(() => {
        if (!replayed) {
          replayed = true
          return Effect.fail(first)
        }
        attempts++
        return self
      })
      return again.pipe(
        retrying({
          schedule,
          while: (error: E) => isRetryable(error, traits),
          onRetry: (error, delay) =>
            Effect.logWarning(
              `${label}: attempt ${attempts} failed (${errorMessage(error, { tagged: true })}), retrying in ${
                formatMillis(delay)
              }`
            ).pipe(Effect.zipRight(Metric.increment(Metric.tagged(Metrics.retries, "what", label))))
        }),
        Effect.catchAll((error) => giveUp(error, attempts))
      )
    })
  }
)

/**
 * The reconnection schedule's shape: `reconnectBase`, `reconnectFactor`, `reconnectShortCap`,
 * `reconnectShortPhase`, `reconnectLongCap`, `reconnectJitter` (a fraction: 0.2 is 0.8 to 1.2), `reconnectSoon`,
 * `reconnectSoonFraction`, `reconnectSoonCap` and `reconnectMaxCap`, each optional (in the environment
 * `RECONNECT_BASE`, ...).
 *
 * @since 0.1.0
 * @category config
 */
export const reconnectConfig: Config.Config<ReconnectOptions> = pipe(
  Config.all({
    base: Cfg.optional(Cfg.duration("reconnectBase", "The first reconnection delay after a costly failure.")),
    factor: Cfg.optional(Cfg.number("reconnectFactor", "How much each reconnection delay grows.", 1, 10)),
    shortCap: Cfg.optional(Cfg.duration("reconnectShortCap", "The reconnection delay's cap while an outage is young.")),
    shortPhase: Cfg.optional(Cfg.duration("reconnectShortPhase", "How long an outage is young.")),
    longCap: Cfg.optional(Cfg.duration("reconnectLongCap", "The reconnection delay's cap after that.")),
    jitter: Cfg.optional(
      Config.map(
        Cfg.number("reconnectJitter", "The spread of each delay (0.2: from 0.8 to 1.2 times).", 0, 0.99),
        (spread) => ({ min: 1 - spread, max: 1 + spread })
      )
    ),
    soon: Cfg.optional(Cfg.duration("reconnectSoon", "The shortest delay after a cheap failure.")),
    soonFraction: Cfg.optional(
      Cfg.number("reconnectSoonFraction", "The share of the outage so far a cheap failure's delay grows with.", 0, 1)
    ),
    soonCap: Cfg.optional(Cfg.duration("reconnectSoonCap", "The cap of a cheap failure's delay.")),
    maxCap: Cfg.optional(Cfg.duration("reconnectMaxCap", "How far the long cap grows with a long outage."))
  }),
  (config) =>
    Cfg.firstWithinCap(config, ["reconnectBase", "reconnectShortCap"], (o) => [o.base, o.shortCap], [
      reconnectDefaults.base,
      reconnectDefaults.shortCap
    ]),
  (config) =>
    Cfg.firstWithinCap(config, ["reconnectShortCap", "reconnectLongCap"], (o) => [o.shortCap, o.longCap], [
      reconnectDefaults.shortCap,
      reconnectDefaults.longCap
    ]),
  (config) =>
    Cfg.firstWithinCap(config, ["reconnectSoon", "reconnectSoonCap"], (o) => [o.soon, o.soonCap], [
      reconnectDefaults.soon,
      reconnectDefaults.soonCap
    ])
)

/**
 * The client lookup retry's shape: `lookupRetries` and `lookupRetryInterval`, each optional.
 *
 * @since 0.1.0
 * @category config
 */
export const lookupConfig: Config.Config<LookupOptions> = Config.all({
  retries: Cfg.optional(Cfg.integer("lookupRetries", "Retries of a client lookup that timed out.", 0, 100)),
  interval: Cfg.optional(Cfg.duration("lookupRetryInterval", "The time between a lookup's retries."))
})

/**
 * The call retry's shape: `callRetries` (0: no retry), `callRetryBase` and `callRetryCap`, each optional.
 *
 * @since 0.1.0
 * @category config
 */
export const callConfig: Config.Config<CallRetryOptions> = Cfg.firstWithinCap(
  Config.all({
    retries: Cfg.optional(Cfg.integer("callRetries", "Retries of a failed call (0: none).", 0, 100)),
    base: Cfg.optional(Cfg.duration("callRetryBase", "The first delay before a call is retried.")),
    cap: Cfg.optional(Cfg.duration("callRetryCap", "The longest delay before a call is retried."))
  }),
  ["callRetryBase", "callRetryCap"],
  (o) => [o.base, o.cap],
  [callDefaults.base, callDefaults.cap]
)

/**
 * A {@link backoff} whose first delay and cap come from two options, `<name>Base` and `<name>Cap`: `undefined`
 * when both are absent (the caller's default schedule stands), the given shape's defaults for the one absent, and
 * a `ConfigError` naming both when the first exceeds the cap.
 *
 * @since 0.1.0
 * @category config
 */
export const backoffConfig = (
  name: string,
  defaults: { readonly base: Duration.Duration; readonly cap: Duration.Duration },
  what = "the backoff"
): Config.Config<Schedule.Schedule<Duration.Duration, unknown> | undefined> =>
  Config.map(
    Cfg.firstWithinCap(
      Config.all({
        base: Cfg.optional(Cfg.duration(`${name}Base`, `The first delay of ${what}.`)),
        cap: Cfg.optional(Cfg.duration(`${name}Cap`, `The longest delay of ${what}.`))
      }),
      [`${name}Base`, `${name}Cap`],
      (o) => [o.base, o.cap],
      [defaults.base, defaults.cap]
    ),
    ({ base, cap }) =>
      base === undefined && cap === undefined
        ? undefined
        : backoff({ base: base ?? defaults.base, cap: cap ?? defaults.cap })
  )
