/**
 * Which failures are worth another try, and the schedules that space the tries.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import { pipe } from "effect/Function"
import * as Schedule from "effect/Schedule"

const capped = (cap: Duration.DurationInput) => <Out, In, R>(self: Schedule.Schedule<Out, In, R>) =>
  Schedule.modifyDelay(self, (_, delay) => Duration.min(delay, cap))

/**
 * The shape of a reconnection schedule: exponential backoff whose cap is short
 * at the start of an outage and long once the outage has lasted a while.
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
  /** Cap once the outage is older. Default 30 s. */
  readonly longCap?: Duration.DurationInput | undefined
  /** Each delay is multiplied by a random factor in [min, max]. Default 0.8 to 1.2. */
  readonly jitter?: { readonly min: number; readonly max: number } | undefined
}

/**
 * A reconnection schedule of the given shape, forever. The caps apply before
 * the jitter, so a fleet at the cap stays spread out.
 *
 * @since 0.1.0
 * @category schedules
 */
export const reconnectWith = (options: ReconnectOptions = {}): Schedule.Schedule<Duration.Duration, unknown> => {
  const base = Duration.decode(options.base ?? "500 millis")
  const factor = options.factor ?? 2
  const shortCap = Duration.decode(options.shortCap ?? "2 seconds")
  const longCap = options.longCap ?? "30 seconds"
  return pipe(
    Schedule.exponential(base, factor),
    capped(shortCap),
    Schedule.upTo(options.shortPhase ?? "1 minute"),
    // The long phase grows on from the short cap instead of jumping to the long cap.
    Schedule.andThen(pipe(Schedule.exponential(Duration.times(shortCap, factor), factor), capped(longCap))),
    Schedule.jitteredWith(options.jitter ?? { min: 0.8, max: 1.2 }),
    // Whole milliseconds: the clock ticks in them, and fractional instants make `Schedule.fixed` spin under TestClock.
    Schedule.modifyDelay((_, delay) => Duration.millis(Math.round(Duration.toMillis(delay))))
  )
}

/**
 * The default reconnection schedule: exponential from 500 ms, factor 2,
 * capped at 2 s during the first minute of an outage and at 30 s after it,
 * jittered by 0.8 to 1.2, forever.
 *
 * @since 0.1.0
 * @category schedules
 */
export const reconnect: Schedule.Schedule<Duration.Duration, unknown> = reconnectWith()
