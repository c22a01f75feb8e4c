/**
 * Every rule an option obeys, written once: a rule turns an input into the
 * value or into the reason it is refused. `option` applies one to an option
 * given in code (an `InvalidOption` naming it); `config.ts` beside it applies
 * the same rule to a variable of the environment (a `ConfigError` naming it).
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import { InvalidOption } from "./invalidOption.js"
import { isIpV4, isIpV6, isReadableFilePath } from "./runtime.js"

export { InvalidOption }

/** The value, or why the input is refused. */
export type Rule<I, A> = (input: I) => Either.Either<A, string>

// A gRPC target URI says how to resolve it; a plain address must name its port (grpc-js would dial 443).
const uriPattern = /^(?:dns|unix|unix-abstract|ipv4|ipv6|xds|vsock):\S+$/
// Groups: the IPv6 address in brackets, or the name or IPv4 address; the port.
const hostPortPattern = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+))(?::(\d{1,5}))?$/

/** `host:port` (port 1-65535), `[v6]:port`, or a gRPC target URI. */
export const isAddress: Rule<string, string> = (input) => {
  if (typeof input === "string" && uriPattern.test(input)) return Either.right(input)
  const match = typeof input === "string" ? hostPortPattern.exec(input) : null
  if (match === null) return Either.left(`expected host:port or a gRPC target URI, got ${JSON.stringify(input)}`)
  if (match[3] === undefined) {
    return Either.left(
      `${JSON.stringify(input)} has no port: write host:port (or a gRPC target URI such as dns:${input}:443)`
    )
  }
  const port = Number(match[3])
  return port >= 1 && port <= 65535 ? Either.right(input) : Either.left(`port ${port} is outside 1-65535`)
}

/**
 * What grpc-js dials for an address `isAddress` accepts: an IP address and port through its ip resolver
 * (`ipv4:`, `ipv6:`), which hands the address over as it is (its DNS resolver would make a c-ares channel for every
 * channel, to resolve nothing); a name or a target URI as written.
 */
export const dialTarget = (address: string): string => {
  const match = hostPortPattern.exec(address)
  if (match?.[3] === undefined) return address
  if (match[1] !== undefined && isIpV6(match[1])) return `ipv6:${address}`
  if (match[2] !== undefined && isIpV4(match[2])) return `ipv4:${address}`
  return address
}

const expectedDuration = `expected a finite, positive duration such as "10 seconds" or "500 millis"`

/** A positive, finite duration. */
export const isPositiveDuration: Rule<Duration.DurationInput, Duration.Duration> = (input) =>
  Option.match(Duration.decodeUnknown(input), {
    onNone: () => Either.left(`${expectedDuration}, got ${JSON.stringify(input)}`),
    onSome: (duration) =>
      Duration.isFinite(duration) && Duration.greaterThan(duration, Duration.zero)
        ? Either.right(duration)
        : Either.left(`${expectedDuration}, got ${Duration.format(duration)}`)
  })

/** A finite duration from zero up to `max`. */
export const isDurationUpTo = (max: Duration.Duration): Rule<Duration.DurationInput, Duration.Duration> => (input) =>
  Option.match(Duration.decodeUnknown(input), {
    onNone: () => Either.left(`expected a duration such as "25 seconds" or "0 millis", got ${JSON.stringify(input)}`),
    onSome: (duration) =>
      Duration.isFinite(duration) && Duration.lessThanOrEqualTo(duration, max)
        ? Either.right(duration)
        : Either.left(`expected a duration from 0 to ${Duration.format(max)}, got ${Duration.format(duration)}`)
  })

/** A whole number within bounds. */
export const isWholeNumber = (min: number, max = Number.MAX_SAFE_INTEGER): Rule<number, number> => (input) =>
  Number.isInteger(input) && input >= min && input <= max
    ? Either.right(input)
    : Either.left(`expected a whole number from ${min} to ${max}, got ${input}`)

/** A number within bounds. */
export const isNumberWithin = (min: number, max: number): Rule<number, number> => (input) =>
  typeof input === "number" && input >= min && input <= max
    ? Either.right(input)
    : Either.left(`expected a number from ${min} to ${max}, got ${input}`)

/** The path of a file this process can read. */
export const isReadableFile: Rule<string, string> = (path) =>
  isReadableFilePath(path)
    ? Either.right(path)
    : Either.left(`expected the path of a readable file, got ${JSON.stringify(path)}`)

/** An option given in code, checked by its rule: the fallback when absent, an `InvalidOption` naming it when refused. */
export const option: {
  <I, A>(name: string, rule: Rule<I, A>, input: I): Effect.Effect<A, InvalidOption>
  <I, A>(name: string, rule: Rule<I, A>, input: I | undefined, fallback: A): Effect.Effect<A, InvalidOption>
} = <I, A>(name: string, rule: Rule<I, A>, input: I | undefined, ...fallback: [] | [A]) =>
  input === undefined && fallback.length === 1
    ? Effect.succeed(fallback[0] as A)
    : Either.match(rule(input as I), {
      onLeft: (reason) => Effect.fail(new InvalidOption({ option: name, reason })),
      onRight: Effect.succeed
    })

/** A positive, finite duration, or the fallback when absent. */
export const positiveDuration = (
  name: string,
  input: Duration.DurationInput | undefined,
  fallback: Duration.Duration
): Effect.Effect<Duration.Duration, InvalidOption> => option(name, isPositiveDuration, input, fallback)

/** A whole number within bounds, or the fallback when absent. */
export const integer = (
  name: string,
  input: number | undefined,
  fallback: number,
  min = 1,
  max = Number.MAX_SAFE_INTEGER
): Effect.Effect<number, InvalidOption> => option(name, isWholeNumber(min, max), input, fallback)

/** `host:port`, `[v6]:port`, or a gRPC target URI. */
export const address = (name: string, input: string): Effect.Effect<string, InvalidOption> =>
  option(name, isAddress, input)
