import * as Duration from "effect/Duration"
import * as Predicate from "effect/Predicate"

/** A duration rounded to the millisecond, for log lines a person reads. */
export const formatMillis = (duration: Duration.DurationInput): string =>
  Duration.format(Duration.millis(Math.round(Duration.toMillis(duration))))

/** The message of whatever failed, for a log line or a report; with `tagged`, after its tag (`GrpcError: ...`). */
export const errorMessage = (error: unknown, options?: { readonly tagged?: boolean }): string => {
  if (!Predicate.hasProperty(error, "message")) return String(error)
  const message = String(error.message)
  if (options?.tagged !== true) return message
  const tag = Predicate.hasProperty(error, "_tag") ? String(error._tag) : "Error"
  return `${tag}: ${message}`
}
