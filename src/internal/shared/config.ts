/**
 * The configuration's one shape, shared by every module: each option is read under its camelCase name
 * (`callTimeout`), which the environment holds in CONSTANT_CASE (`CALL_TIMEOUT`, or `EAST_CALL_TIMEOUT` under a
 * prefix); every error names what was read. A rule is the one `validate.ts` applies to an option given in code.
 */
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Context from "effect/Context"
import * as DefaultServices from "effect/DefaultServices"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Validate from "./validate.js"

/** `callRetryBase` → `CALL_RETRY_BASE`; a name in CONSTANT_CASE already stays as it is. */
export const constantCase = (name: string): string =>
  name.replace(/([a-z0-9])([A-Z])/g, "$1_$2").replace(/[^A-Za-z0-9]+/g, "_").toUpperCase()

/** `EAST`, `EAST_` and `east` are the prefix `EAST_`; none is `""`. */
export const normalizePrefix = (prefix: string | undefined): string => {
  if (prefix === undefined || prefix === "") return ""
  const name = constantCase(prefix)
  return name.endsWith("_") ? name : `${name}_`
}

/** The environment variable that holds the option at `path` (its camelCase names, nested ones first). */
export const variable = (path: ReadonlyArray<string>, prefix = ""): string =>
  normalizePrefix(prefix) + path.map(constantCase).join("_")

/**
 * A message may name another option of its group as `{name}`: it is written as that option's variable (or its
 * path, under a provider of another kind), so `{callRetryCap}` reads `EAST_CALL_RETRY_CAP` under `EAST_`.
 */
export const ref = (name: string): string => `{${name}}`

const refPattern = /\{([a-z][A-Za-z0-9]*)\}/g

type Namer = (path: ReadonlyArray<string>) => string

// Each leaf of the error (a failure at one path) replaced, its And and Or kept.
type Leaf = Exclude<ConfigError.ConfigError, ConfigError.And | ConfigError.Or>
const mapLeaves = (
  error: ConfigError.ConfigError,
  f: (leaf: Leaf) => ConfigError.ConfigError
): ConfigError.ConfigError =>
  error._op === "And"
    ? ConfigError.And(mapLeaves(error.left, f), mapLeaves(error.right, f))
    : error._op === "Or"
    ? ConfigError.Or(mapLeaves(error.left, f), mapLeaves(error.right, f))
    : f(error)

// A leaf with another path and message, of the same kind.
const withPath = (leaf: Leaf, path: Array<string>, message: string): ConfigError.ConfigError => {
  switch (leaf._op) {
    case "InvalidData":
      return ConfigError.InvalidData(path, message)
    case "MissingData":
      return ConfigError.MissingData(path, message)
    case "SourceUnavailable":
      return ConfigError.SourceUnavailable(path, message, leaf.cause)
    case "Unsupported":
      return ConfigError.Unsupported(path, message)
  }
}

/** Every path of the error written as one name, and every `{name}` of its messages as its sibling's name. */
const rename = (error: ConfigError.ConfigError, name: Namer): ConfigError.ConfigError =>
  mapLeaves(error, (leaf) => {
    const message = leaf.message.replace(refPattern, (_, sibling: string) => name([...leaf.path.slice(0, -1), sibling]))
      // ConfigError quotes its message: quotes inside would double up.
      .replaceAll("\"", "'")
    const at = leaf.path.length === 0 ? [] : [name(leaf.path)]
    return withPath(
      leaf,
      at,
      leaf._op === "MissingData" && leaf.path.length > 0 ? `${name(leaf.path)} is required` : message
    )
  })

// The errors of a flat provider's load, at the path the config asked for (the environment's own name aside).
const atPath = (error: ConfigError.ConfigError, path: ReadonlyArray<string>): ConfigError.ConfigError =>
  mapLeaves(error, (leaf) => withPath(leaf, [...path], leaf.message))

const namers = new WeakMap<ConfigProvider.ConfigProvider, Namer>()

/** Options of {@link fromEnv}. */
export interface EnvOptions {
  /** Read `EAST_CALL_TIMEOUT` for `callTimeout`. Default: none. */
  readonly prefix?: string | undefined
  /** The variables, instead of `process.env` (tests). */
  readonly env?: Readonly<Record<string, string | undefined>> | undefined
}

/**
 * A provider that reads the option `callTimeout` from the variable `CALL_TIMEOUT` (`EAST_CALL_TIMEOUT` under the
 * prefix `EAST_`), and names that variable in every error it fails with, a rule's included.
 */
export const fromEnv = (options: EnvOptions = {}): ConfigProvider.ConfigProvider => {
  const prefix = normalizePrefix(options.prefix)
  const name: Namer = (path) => variable(path, prefix)
  const env = options.env
  const base = env === undefined
    ? ConfigProvider.fromEnv()
    : ConfigProvider.fromMap(
      new Map(Object.entries(env).flatMap(([key, value]) => (value === undefined ? [] : [[key, value]]))),
      { pathDelim: "_" }
    )
  const flat = ConfigProvider.makeFlat({
    load: (path, primitive, split) =>
      Effect.mapError(base.flattened.load([name(path)], primitive, split), (error) => atPath(error, path)),
    enumerateChildren: (path) => base.flattened.enumerateChildren(name(path).split("_")),
    patch: base.flattened.patch
  })
  const inner = ConfigProvider.fromFlat(flat)
  const provider = ConfigProvider.make({
    load: (config) => Effect.mapError(inner.load(config), (error) => rename(error, name)),
    flattened: flat
  })
  namers.set(provider, name)
  sources.set(provider, { prefix, env })
  return provider
}

const sources = new WeakMap<ConfigProvider.ConfigProvider, EnvOptions>()

/**
 * Runs an effect reading under a further prefix: the environment this provider reads (the current one, or
 * `process.env` when the program set none) with the prefix after its own; a provider of another kind nested under
 * the prefix's name.
 */
export const withPrefix = (prefix: string) => <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.configProviderWith((current) => {
    const source = current === effectDefault ? {} : sources.get(current)
    const next = source === undefined
      ? ConfigProvider.nested(current, normalizePrefix(prefix).replace(/_$/, ""))
      : fromEnv({ env: source.env, prefix: normalizePrefix(source.prefix) + normalizePrefix(prefix) })
    return Effect.withConfigProvider(self, next)
  })

// The provider a program has when it sets none: Effect's reading of `process.env` by the names as written.
const effectDefault = Context.get(DefaultServices.liveServices, ConfigProvider.ConfigProvider)

/**
 * Reads a config as every `layerConfig` does: from the current provider, or from the environment in CONSTANT_CASE
 * ({@link fromEnv}) when the program set none. Errors name the variable (the path, under a provider of another kind).
 */
export const read = <A>(config: Config.Config.Wrap<A>): Effect.Effect<A, ConfigError.ConfigError> =>
  Effect.configProviderWith((current) => {
    const provider = current === effectDefault ? fromEnv() : current
    const named = namers.has(provider)
    return Effect.mapError(
      provider.load(Config.unwrap(config)),
      (error) => (named ? error : rename(error, (path) => path.join(".")))
    )
  })

/** How the current provider names an option: its variable under {@link fromEnv}, its path otherwise. */
export const nameOf = (path: ReadonlyArray<string>): Effect.Effect<string> =>
  Effect.configProviderWith((current) =>
    Effect.succeed((namers.get(current) ?? (current === effectDefault ? variable : (p) => p.join(".")))(path))
  )

/** An option read as `config` reads it, with what it means. */
export const described = <A>(config: Config.Config<A>, description: string): Config.Config<A> =>
  Config.withDescription(config, description)

/** An optional option: absent is `undefined`, so the module's default applies. */
export const optional = <A>(config: Config.Config<A>): Config.Config<A | undefined> =>
  Config.map(Config.option(config), Option.getOrUndefined)

/** An option read as `base` reads it, then checked by the rule it obeys in code. */
export const checked = <I, A>(base: Config.Config<I>, rule: Validate.Rule<I, A>): Config.Config<A> =>
  Config.mapOrFail(base, (input) => Either.mapLeft(rule(input), (reason) => ConfigError.InvalidData([], reason)))

// Read and checked in one step over the variable itself, so that the error keeps its path. Effect's own duration
// parser quotes the input in its message; this one says what it expects.
const durationChecked = (name: string, rule: Validate.Rule<Duration.DurationInput, Duration.Duration>) =>
  Config.mapOrFail(Config.string(name), (text) =>
    Option.match(Duration.decodeUnknown(text.trim()), {
      onNone: () =>
        Either.left(ConfigError.InvalidData([], `expected a duration such as 10 seconds or 500 millis, got ${text}`)),
      onSome: (duration) =>
        Either.mapLeft(
          rule(duration),
          // The input as written: "-5 seconds" decodes to zero.
          (reason) => ConfigError.InvalidData([], reason.replace(/, got .*$/s, `, got ${text}`))
        )
    }))

/** A positive, finite duration such as `10 seconds` or `500 millis`. */
export const duration = (name: string, description: string): Config.Config<Duration.Duration> =>
  described(durationChecked(name, Validate.isPositiveDuration), description)

/** A finite duration from zero up to `max`. */
export const durationUpTo = (
  name: string,
  max: Duration.Duration,
  description: string
): Config.Config<Duration.Duration> => described(durationChecked(name, Validate.isDurationUpTo(max)), description)

/** A whole number within bounds. */
export const integer = (
  name: string,
  description: string,
  min: number,
  max = Number.MAX_SAFE_INTEGER
): Config.Config<number> => described(checked(Config.integer(name), Validate.isWholeNumber(min, max)), description)

/** A number within bounds. */
export const number = (name: string, description: string, min: number, max: number): Config.Config<number> =>
  described(checked(Config.number(name), Validate.isNumberWithin(min, max)), description)

/** A master address: `host:port`, `[v6]:port` or a gRPC target URI. */
export const address = (name: string, description: string): Config.Config<string> =>
  described(checked(Config.string(name), Validate.isAddress), description)

/** A path to a file this process can read: checked at start, so the error names the variable. */
export const readableFile = (name: string, description: string): Config.Config<string> =>
  described(checked(Config.nonEmptyString(name), Validate.isReadableFile), description)

/**
 * A first delay may not exceed its cap: checked on the whole group, with the defaults standing in for the
 * options that are absent; the error is the first's and names both (`names` are the two options' names).
 */
export const firstWithinCap = <A>(
  config: Config.Config<A>,
  names: readonly [first: string, cap: string],
  read: (a: A) => readonly [Duration.Duration | undefined, Duration.Duration | undefined],
  defaults: readonly [Duration.DurationInput, Duration.DurationInput]
): Config.Config<A> =>
  Config.mapOrFail(config, (a) => {
    const [first, cap] = read(a)
    const firstOr = first ?? Duration.decode(defaults[0])
    const capOr = cap ?? Duration.decode(defaults[1])
    return Duration.lessThanOrEqualTo(firstOr, capOr)
      ? Either.right(a)
      : Either.left(
        ConfigError.InvalidData(
          [first === undefined ? names[1] : names[0]],
          `${ref(names[0])} (${Duration.format(firstOr)}) must not exceed ${ref(names[1])} (${Duration.format(capOr)})`
        )
      )
  })
