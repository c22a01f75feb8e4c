/**
 * Where the configuration comes from. Every module's `config` names its options in camelCase (`callTimeout`), as
 * `@effect/cluster`'s `ShardingConfig` does, and every `layerConfig(code, config = Module.config)` reads it from the
 * current `ConfigProvider`; a program that set none reads the environment in CONSTANT_CASE (`CALL_TIMEOUT`), as
 * {@link provider} does. A second master reads its own variables under a prefix: `prefixed("EAST_")` around its
 * layers reads `EAST_MASTER_ADDRESS`, `EAST_CALL_TIMEOUT`, ... Every error, a rule's included, names the variable.
 *
 * @since 0.3.0
 */
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import type * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Cfg from "./internal/shared/config.js"

/**
 * The options of {@link provider}.
 *
 * @since 0.3.0
 * @category models
 */
export type Options = Cfg.EnvOptions

/**
 * A provider that reads the option `callTimeout` from the variable `CALL_TIMEOUT` (`EAST_CALL_TIMEOUT` with the
 * prefix `EAST_`) and names that variable in every error it fails with: `Invalid data at EAST_CALL_TIMEOUT:
 * expected a duration such as 10 seconds or 500 millis, got often`. A name in CONSTANT_CASE stays as it is, so an
 * app's own `Config.string("LOG_FORMAT")` reads `LOG_FORMAT` (`EAST_LOG_FORMAT`).
 *
 * @since 0.3.0
 * @category constructors
 */
export const provider: (options?: Options) => ConfigProvider.ConfigProvider = Cfg.fromEnv

/**
 * {@link provider} as the program's provider, for the layers built after it.
 *
 * @since 0.3.0
 * @category layers
 */
export const layer = (options?: Options): Layer.Layer<never> => Layer.setConfigProvider(Cfg.fromEnv(options))

/**
 * Builds a layer (and all it builds) reading the environment under a prefix, without touching what other layers
 * read: `Layer.mergeAll(East.pipe(Env.prefixed("EAST_")), West.pipe(Env.prefixed("WEST_")))`. The environment is
 * the current {@link provider}'s (after its own prefix), or `process.env` when the program set none.
 *
 * @since 0.3.0
 * @category combinators
 */
export const prefixed = (prefix: string) => <A, E, R>(self: Layer.Layer<A, E, R>): Layer.Layer<A, E, R> =>
  // Fresh: built apart from the same layers elsewhere in the app, which read without the prefix.
  Layer.locallyEffect(Layer.fresh(self), Cfg.withPrefix(prefix))

/**
 * Reads a config as every `layerConfig` does: from the current provider, or from the environment in CONSTANT_CASE
 * when the program set none.
 *
 * @since 0.3.0
 * @category constructors
 */
export const read: <A>(config: Config.Config.Wrap<A>) => Effect.Effect<A, ConfigError.ConfigError> = Cfg.read

/**
 * Reads the given configs when the layer is built and fails with every error among them: provide it first, so
 * that a missing `NODE_KEY` stops the worker before its connection dials or its health endpoint listens.
 *
 * ```ts
 * Layer.provide(Env.check(Connection.config, TaskSource.config, TaskHandler.config))
 * ```
 *
 * @since 0.3.0
 * @category layers
 */
export const check = (...configs: ReadonlyArray<AnyConfig>): Layer.Layer<never, ConfigError.ConfigError> =>
  Layer.effectDiscard(
    Cfg.read(Config.all(configs.map((config) => Config.unwrap(config as Config.Config.Wrap<unknown>))))
  )

/**
 * A config or a record of them, as a module's `config` is.
 *
 * @since 0.3.0
 * @category models
 */
export type AnyConfig = Config.Config<unknown> | { readonly [key: string]: AnyConfig }

/**
 * The environment variable that holds an option: `variable("callTimeout", "EAST_")` is `EAST_CALL_TIMEOUT`.
 *
 * @since 0.3.0
 * @category utils
 */
export const variable = (name: string, prefix?: string): string => Cfg.variable([name], prefix)
