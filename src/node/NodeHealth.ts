/**
 * The health endpoint (`/healthz`, `/readyz`, `/metrics`: see `Health`) on a
 * Node HTTP server of its own.
 *
 * @since 0.2.0
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import type * as HttpServerError from "@effect/platform/HttpServerError"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { createServer } from "node:http"
import type * as Connection from "../Connection.js"
import * as Env from "../Env.js"
import * as Health from "../Health.js"
import type * as InvalidOption from "../InvalidOption.js"

/**
 * Serves the endpoint on its own Node HTTP server for as long as the layer's
 * scope, reporting the readiness of the given connection, or without one
 * of the `Readiness` in context; fails with `ServeError` when the port cannot be
 * bound, with `InvalidOption` for a bad port or host.
 *
 * @since 0.2.0
 * @category layers
 */
export const layer = <C extends Connection.AnyTag = never>(
  options: Health.Options & Connection.Using<C> = {}
): Layer.Layer<Health.Health, InvalidOption.InvalidOption | HttpServerError.ServeError, Health.Requires<C>> =>
  Layer.unwrapEffect(
    Effect.map(
      Health.validate(options),
      (listen) => Health.serve(options).pipe(Layer.provide(NodeHttpServer.layer(createServer, listen)))
    )
  )

/**
 * {@link layer} with the connection given in code and the port and host read from `Config` (default
 * `Health.config`: `HEALTH_PORT`, `HEALTH_HOST`), as every `layerConfig` reads it (`Env.read`).
 *
 * @since 0.2.0
 * @category layers
 */
export const layerConfig = <C extends Connection.AnyTag = never>(
  code: Connection.Using<C> = {},
  config: Config.Config.Wrap<Health.Options> = Health.config
): Layer.Layer<
  Health.Health,
  InvalidOption.InvalidOption | HttpServerError.ServeError | ConfigError.ConfigError,
  Health.Requires<C>
> => Layer.unwrapEffect(Effect.map(Env.read(config), (options) => layer<C>({ ...options, ...code })))
