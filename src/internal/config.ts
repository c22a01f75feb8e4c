import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Validate from "./validate.js"

/** An optional variable: absent is `undefined`, so the module's default applies. */
export const optional = <A>(config: Config.Config<A>): Config.Config<A | undefined> =>
  Config.map(Config.option(config), Option.getOrUndefined)

/** A variable read as `base` reads it, then checked by the rule its option obeys in code. */
export const checked = <I, A>(base: Config.Config<I>, rule: Validate.Rule<I, A>): Config.Config<A> =>
  Config.mapOrFail(base, (input) => Either.mapLeft(rule(input), (reason) => ConfigError.InvalidData([], reason)))

/** A positive, finite duration such as `10 seconds` or `500 millis`. */
export const duration = (name: string): Config.Config<Duration.Duration> =>
  checked(Config.duration(name), Validate.isPositiveDuration)

/** A finite duration from zero up to `max`. */
export const durationUpTo = (name: string, max: Duration.Duration): Config.Config<Duration.Duration> =>
  checked(Config.duration(name), Validate.isDurationUpTo(max))

/** A whole number within bounds. */
export const integer = (name: string, min: number, max = Number.MAX_SAFE_INTEGER): Config.Config<number> =>
  checked(Config.integer(name), Validate.isWholeNumber(min, max))

/** A number within bounds. */
export const number = (name: string, min: number, max: number): Config.Config<number> =>
  checked(Config.number(name), Validate.isNumberWithin(min, max))

/** A master address: `host:port`, `[v6]:port` or a gRPC target URI. */
export const address = (name: string): Config.Config<string> => checked(Config.string(name), Validate.isAddress)

/** A path to a file this process can read: checked at start, so the error names the variable. */
export const readableFile = (name: string): Config.Config<string> =>
  checked(Config.nonEmptyString(name), Validate.isReadableFile)

/**
 * A first delay may not exceed its cap: checked on the whole group, with the defaults standing in for the
 * variables that are absent, so the error names both variables.
 */
export const firstWithinCap = <A>(
  config: Config.Config<A>,
  names: readonly [first: string, cap: string],
  read: (a: A) => readonly [Duration.Duration | undefined, Duration.Duration | undefined],
  defaults: readonly [Duration.DurationInput, Duration.DurationInput]
): Config.Config<A> =>
  Config.validate(config, {
    message: `${names[0]} must not exceed ${names[1]}`,
    validation: (a) => {
      const [first, cap] = read(a)
      return Duration.lessThanOrEqualTo(first ?? Duration.decode(defaults[0]), cap ?? Duration.decode(defaults[1]))
    }
  })
