/**
 * An HTTP endpoint for the probes and the scraper of the worker process:
 *
 * - `GET /healthz`: 200 `{"status":"ok"}` while the process runs, connected or not (liveness).
 * - `GET /readyz`: 200 with the readiness report when the connection is ready,
 *   503 with the report and the check that holds it back when not (readiness);
 *   `unpersistedReports` while the outbox cannot store reports.
 * - `GET /metrics`: every metric of Effect's global registry in the Prometheus
 *   text format, version 0.0.4.
 *
 * `HEAD` is answered as `GET`; another method on these paths is 405 with an
 * `Allow` header, any other path 404.
 *
 * @since 0.1.0
 */
import * as HttpMiddleware from "@effect/platform/HttpMiddleware"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import type * as HttpServerError from "@effect/platform/HttpServerError"
import type * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import { createServer } from "node:http"
import * as Prometheus from "./internal/prometheus.js"
import * as Validate from "./internal/validate.js"
import { InvalidOption } from "./internal/validate.js"
import * as Metrics from "./Metrics.js"
import * as Readiness from "./Readiness.js"

export {
  /**
   * An option the endpoint cannot work with; names the option.
   *
   * @since 0.1.0
   * @category errors
   */
  InvalidOption
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The TCP port; 0 takes a free one (see `Health.port`). Default 9090. */
  readonly port?: number | undefined
  /** The address to bind. Default `0.0.0.0`: the kubelet and the scraper come from outside the pod. */
  readonly host?: string | undefined
}

/**
 * The defaults of {@link Options}.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaults = {
  port: 9090,
  // Not 127.0.0.1: probes and scrapes reach the pod's IP. Not "::": it fails where IPv6 is disabled.
  host: "0.0.0.0"
} as const

/**
 * The running endpoint and the address it is bound to.
 *
 * @since 0.1.0
 * @category tags
 */
export class Health extends Context.Tag("effect-grpc-resilience/Health")<Health, {
  /** The bound address, as the server reports it (`0.0.0.0` when bound to every interface). */
  readonly hostname: string
  /** The bound port: the one taken when the option was 0. */
  readonly port: number
  /** `http://hostname:port`, to reach the endpoint. */
  readonly url: string
}>() {}

/**
 * A check of the report as JSON: `{"status":"failed","message":"..."}`.
 *
 * @since 0.1.0
 * @category models
 */
export type CheckJson =
  | { readonly status: "passed" | "pending" }
  | { readonly status: "failed"; readonly message: string }

/**
 * A readiness report as JSON, its duration in milliseconds.
 *
 * @since 0.1.0
 * @category models
 */
export interface ReportJson {
  readonly generation: number
  readonly elapsedMs: number
  readonly rounds: number
  readonly checks: { readonly [K in Readiness.CheckName]: CheckJson }
}

/**
 * The body of `/readyz`: the report, and when not ready the first check that
 * did not pass (`null` when every check passed but the connection is not
 * ready, as after it closed) and a line a person can read.
 *
 * @since 0.1.0
 * @category models
 */
export type ReadinessJson =
  | { readonly ready: true; readonly report: ReportJson }
  | {
    readonly ready: false
    readonly failing: Readiness.CheckName | null
    readonly reason: string
    readonly report: ReportJson
  }

const checkJson = (result: Readiness.CheckResult): CheckJson =>
  Readiness.CheckResult.$match(result, {
    Passed: () => ({ status: "passed" }) as const,
    Pending: () => ({ status: "pending" }) as const,
    Failed: ({ message }) => ({ status: "failed", message }) as const
  })

/**
 * The `/readyz` body of a readiness status.
 *
 * @since 0.1.0
 * @category encoding
 */
export const readinessJson = (status: Readiness.ReadinessStatus): ReadinessJson => {
  const { report } = status
  const json: ReportJson = {
    generation: report.generation,
    elapsedMs: Duration.toMillis(report.elapsed),
    rounds: report.rounds,
    checks: {
      channel: checkJson(report.checks.channel),
      registered: checkJson(report.checks.registered),
      probe: checkJson(report.checks.probe)
    }
  }
  if (status.ready) return { ready: true, report: json }
  const failing = Readiness.failingCheck(report) ?? null
  return {
    ready: false,
    failing,
    reason: failing === null ? "not ready: the connection is closed" : Readiness.describeFailure(report),
    report: json
  }
}

const paths = new Set(["/healthz", "/readyz", "/metrics"])

const router = HttpRouter.empty.pipe(
  HttpRouter.get("/healthz", Effect.sync(() => HttpServerResponse.unsafeJson({ status: "ok" }))),
  HttpRouter.get(
    "/readyz",
    Effect.flatMap(Readiness.Readiness, (readiness) =>
      Effect.zipWith(readiness.status, Metric.value(Metrics.outboxUnpersisted), (status, unpersisted) =>
        HttpServerResponse.unsafeJson(
          // Reports the outbox could not store (disk full): said only while there are any.
          { ...readinessJson(status), ...(unpersisted.value > 0 ? { unpersistedReports: unpersisted.value } : {}) },
          { status: status.ready ? 200 : 503 }
        )))
  ),
  HttpRouter.get(
    "/metrics",
    Effect.map(Metric.snapshot, (snapshot) =>
      HttpServerResponse.text(Prometheus.format(snapshot), { contentType: Prometheus.contentType }))
  )
)

/**
 * The endpoint as an `HttpApp`, to serve on a server of your own instead of
 * through {@link layer}.
 *
 * @since 0.1.0
 * @category constructors
 */
export const httpApp: Effect.Effect<
  HttpServerResponse.HttpServerResponse,
  never,
  Readiness.Readiness | HttpServerRequest.HttpServerRequest
> = router.pipe(
  Effect.catchTag("RouteNotFound", ({ request }) => {
    const path = request.url.split("?")[0] ?? ""
    return Effect.succeed(
      paths.has(path)
        ? HttpServerResponse.empty({ status: 405, headers: { allow: "GET, HEAD" } })
        : HttpServerResponse.empty({ status: 404 })
    )
  })
)

const validate = (options: Options) =>
  Effect.gen(function*() {
    const port = yield* Validate.integer("port", options.port, defaults.port, 0, 65535)
    const host = options.host ?? defaults.host
    if (host.trim() === "") return yield* new InvalidOption({ option: "host", reason: "must not be empty" })
    return { port, host }
  })

const serve = Effect.gen(function*() {
  const server = yield* HttpServer.HttpServer
  // Probes and scrapes every few seconds would flood a trace backend with spans.
  yield* server.serve(httpApp).pipe(HttpMiddleware.withTracerDisabledWhenEffect(() => true))
  const address = server.address
  if (address._tag !== "TcpAddress") return yield* Effect.dieMessage("the health endpoint is bound to a Unix socket")
  const url = `http://${address.hostname.includes(":") ? `[${address.hostname}]` : address.hostname}:${address.port}`
  yield* Effect.logInfo(`health endpoint on ${url} (/healthz, /readyz, /metrics)`).pipe(
    Effect.annotateLogs({ module: "Health" })
  )
  return Health.of({ hostname: address.hostname, port: address.port, url })
})

/**
 * Serves the endpoint on its own Node HTTP server for as long as the layer's
 * scope; fails with `ServeError` when the port cannot be bound.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options = {}
): Layer.Layer<Health, InvalidOption | HttpServerError.ServeError, Readiness.Readiness> =>
  Layer.unwrapEffect(
    Effect.map(validate(options), (listen) =>
      Layer.scoped(Health, serve).pipe(Layer.provide(NodeHttpServer.layer(createServer, listen))))
  )

/**
 * The options from the environment: `HEALTH_PORT` (default 9090) and
 * `HEALTH_HOST` (default `0.0.0.0`). A bad value is a `ConfigError` naming the
 * variable. Spread it to override one: `{ ...Health.config, port: Config.succeed(0) }`.
 *
 * @since 0.1.0
 * @category config
 */
export const config = {
  port: Config.port("HEALTH_PORT").pipe(Config.withDefault(defaults.port)),
  // An empty HEALTH_HOST counts as unset.
  host: Config.nonEmptyString("HEALTH_HOST").pipe(Config.withDefault(defaults.host))
} satisfies Config.Config.Wrap<Options>

/**
 * {@link layer} with its options read from `Config`, by default {@link config}
 * (`HEALTH_PORT`, `HEALTH_HOST`).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  options: Config.Config.Wrap<Options> = config
): Layer.Layer<Health, InvalidOption | HttpServerError.ServeError | ConfigError.ConfigError, Readiness.Readiness> =>
  Layer.unwrapEffect(Effect.map(Config.unwrap(options), layer))
