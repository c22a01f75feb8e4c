import * as Duration from "effect/Duration"

/** A duration rounded to the millisecond, for log lines a person reads. */
export const formatMillis = (duration: Duration.DurationInput): string =>
  Duration.format(Duration.millis(Math.round(Duration.toMillis(duration))))
