import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { InvalidOption } from "../InvalidOption.js"

export { InvalidOption }

// A gRPC target URI says how to resolve it; a plain address must name its port (grpc-js would dial 443).
const uriPattern = /^(?:dns|unix|unix-abstract|ipv4|ipv6|xds|vsock):\S+$/
const hostPortPattern = /^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?$/

/** Why an address is not `host:port` (port 1-65535), `[v6]:port` or a gRPC target URI; `undefined` when it is. */
export const addressProblem = (input: unknown): string | undefined => {
  if (typeof input === "string" && uriPattern.test(input)) return undefined
  const match = typeof input === "string" ? hostPortPattern.exec(input) : null
  if (match === null) return `expected host:port or a gRPC target URI, got ${JSON.stringify(input)}`
  if (match[1] === undefined) {
    return `${JSON.stringify(input)} has no port: write host:port (or a gRPC target URI such as dns:${input}:443)`
  }
  const port = Number(match[1])
  return port < 1 || port > 65535 ? `port ${port} is outside 1-65535` : undefined
}

/** `host:port`, `[v6]:port`, or a gRPC target URI. */
export const address = (option: string, input: string): Effect.Effect<string, InvalidOption> => {
  const reason = addressProblem(input)
  return reason === undefined ? Effect.succeed(input) : Effect.fail(new InvalidOption({ option, reason }))
}

/** A positive, finite duration, or the fallback when absent. */
export const positiveDuration = (
  option: string,
  input: Duration.DurationInput | undefined,
  fallback: Duration.Duration
): Effect.Effect<Duration.Duration, InvalidOption> => {
  if (input === undefined) return Effect.succeed(fallback)
  return Option.match(Duration.decodeUnknown(input), {
    onNone: () => Effect.fail(new InvalidOption({ option, reason: `not a duration: ${JSON.stringify(input)}` })),
    onSome: (duration) =>
      Duration.isFinite(duration) && Duration.greaterThan(duration, Duration.zero)
        ? Effect.succeed(duration)
        : Effect.fail(new InvalidOption({ option, reason: `must be positive and finite, got ${Duration.format(duration)}` }))
  })
}

/** A whole number within bounds, or the fallback when absent. */
export const integer = (
  option: string,
  input: number | undefined,
  fallback: number,
  min = 1,
  max = Number.MAX_SAFE_INTEGER
): Effect.Effect<number, InvalidOption> => {
  if (input === undefined) return Effect.succeed(fallback)
  return Number.isInteger(input) && input >= min && input <= max
    ? Effect.succeed(input)
    : Effect.fail(new InvalidOption({ option, reason: `expected a whole number from ${min} to ${max}, got ${input}` }))
}
