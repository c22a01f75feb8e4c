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
 * This module is the endpoint on any `@effect/platform` HTTP server;
 * `NodeHealth.layer` (`effect-grpc-resilience/node`) serves it on a Node one.
 *
 * @since 0.1.0
 */
import * as HttpMiddleware from "@effect/platform/HttpMiddleware"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import type * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as MetricState from "effect/MetricState"
import type * as Scope from "effect/Scope"
import * as Connection from "./Connection.js"
import * as Prometheus from "./internal/health/prometheus.js"
import * as Validate from "./internal/shared/validate.js"
import { InvalidOption } from "./InvalidOption.js"
import * as Readiness from "./Readiness.js"

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
  readonly checks:
    & { readonly [K in Readiness.ConnectionCheck]: CheckJson }
    & { readonly [K in Readiness.WorkerCheck]?: CheckJson }
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

// The `/readyz` body of a readiness status.
const readinessJson = (status: Readiness.ReadinessStatus): ReadinessJson => {
  const { report } = status
  const json: ReportJson = {
    generation: report.generation,
    elapsedMs: Duration.toMillis(report.elapsed),
    rounds: report.rounds,
    checks: {
      channel: checkJson(report.checks.channel),
      registered: checkJson(report.checks.registered),
      probe: checkJson(report.checks.probe),
      ...(report.checks.tasks === undefined ? {} : { tasks: checkJson(report.checks.tasks) }),
      ...(report.checks.member === undefined ? {} : { member: checkJson(report.checks.member) })
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

// The process's reports held in memory, over every task handler's series (each labelled by master and node).
const unpersistedReports: Effect.Effect<number> = Effect.map(Metric.snapshot, (pairs) => {
  let total = 0
  for (const pair of pairs) {
    if (pair.metricKey.name === "grpc_resilience_outbox_unpersisted" && MetricState.isGaugeState(pair.metricState)) {
      total += Number(pair.metricState.value)
    }
  }
  return total
})

const router = HttpRouter.empty.pipe(
  HttpRouter.get("/healthz", Effect.sync(() => HttpServerResponse.unsafeJson({ status: "ok" }))),
  HttpRouter.get(
    "/readyz",
    Effect.flatMap(
      Readiness.Readiness,
      (readiness) =>
        Effect.zipWith(readiness.status, unpersistedReports, (status, unpersisted) =>
          HttpServerResponse.unsafeJson(
            // Reports the outbox could not store (disk full): said only while there are any.
            { ...readinessJson(status), ...(unpersisted > 0 ? { unpersistedReports: unpersisted } : {}) },
            { status: status.ready ? 200 : 503 }
          ))
    )
  ),
  HttpRouter.get(
    "/metrics",
    Effect.map(
      Metric.snapshot,
      (snapshot) => HttpServerResponse.text(Prometheus.format(snapshot), { contentType: Prometheus.contentType })
    )
  )
)

/**
 * The endpoint as an `HttpApp`, to serve on a server of your own instead of
 * through `NodeHealth.layer`.
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

/**
 * The options, checked: a port from 0 to 65535 and a host that is not empty.
 *
 * @since 0.2.0
 * @category validation
 */
export const validate = (
  options: Options
): Effect.Effect<{ readonly port: number; readonly host: string }, InvalidOption> =>
  Effect.gen(function*() {
    const port = yield* Validate.integer("port", options.port, defaults.port, 0, 65535)
    const host = options.host ?? defaults.host
    if (host.trim() === "") return yield* new InvalidOption({ option: "host", reason: "must not be empty" })
    return { port, host }
  })

/**
 * What the endpoint needs: the given connection, or without one the
 * `Readiness` in context (which `Connection.layer` provides).
 *
 * @since 0.2.0
 * @category models
 */
export type Requires<C extends Connection.AnyTag> = [C] extends [never] ? Readiness.Readiness
  : Context.Tag.Identifier<C>

/**
 * Serves the endpoint on the `HttpServer` in context for as long as the
 * scope, reporting the readiness of the given connection, or without one of
 * the `Readiness` in context. {@link serve} provides it as `Health`; an app
 * with an endpoint per master provides each on a tag of its own:
 * `Layer.scoped(EastHealth, Health.make({ connection: East }))`.
 *
 * @since 0.3.0
 * @category constructors
 */
export const make = <C extends Connection.AnyTag = never>(
  options: Connection.Using<C> = {}
): Effect.Effect<Health["Type"], never, HttpServer.HttpServer | Requires<C> | Scope.Scope> =>
  Effect.gen(function*() {
    const conn: Connection.Connection | undefined = options.connection === undefined
      ? undefined
      : yield* (options.connection as Connection.AnyTag)
    const readiness = conn === undefined ? yield* Readiness.Readiness : conn.readiness
    const server = yield* HttpServer.HttpServer
    // Probes and scrapes every few seconds would flood a trace backend with spans.
    yield* server.serve(Effect.provideService(httpApp, Readiness.Readiness, readiness)).pipe(
      HttpMiddleware.withTracerDisabledWhenEffect(() => true)
    )
    const address = server.address
    if (address._tag !== "TcpAddress") {
      return yield* Effect.dieMessage("the health endpoint is bound to a Unix socket")
    }
    const url = `http://${address.hostname.includes(":") ? `[${address.hostname}]` : address.hostname}:${address.port}`
    yield* Effect.logInfo(`health endpoint on ${url} (/healthz, /readyz, /metrics)`).pipe(
      Effect.annotateLogs(conn === undefined ? { module: "Health" } : { module: "Health", address: conn.address })
    )
    return Health.of({ hostname: address.hostname, port: address.port, url })
  }) as Effect.Effect<Health["Type"], never, HttpServer.HttpServer | Requires<C> | Scope.Scope>

/**
 * Serves the endpoint on the `HttpServer` in context for as long as the
 * layer's scope, reporting the readiness of the given connection, or without
 * one of the `Readiness` in context.
 *
 * @since 0.2.0
 * @category layers
 */
export const serve = <C extends Connection.AnyTag = never>(
  options: Connection.Using<C> = {}
): Layer.Layer<Health, never, HttpServer.HttpServer | Requires<C>> => Layer.scoped(Health, make(options))

/**
 * The options as `Config` reads them: `healthPort` (`HEALTH_PORT`, default 9090) and `healthHost` (`HEALTH_HOST`,
 * default `0.0.0.0`). A bad value is a `ConfigError` naming the variable. Spread it to override one:
 * `{ ...Health.config, port: Config.succeed(0) }`.
 *
 * @since 0.1.0
 * @category config
 */
export const config = {
  port: Config.port("healthPort").pipe(
    Config.withDefault(defaults.port),
    Config.withDescription("The health endpoint's port.")
  ),
  // An empty HEALTH_HOST counts as unset.
  host: Config.nonEmptyString("healthHost").pipe(
    Config.withDefault(defaults.host),
    Config.withDescription("The address the health endpoint listens on.")
  )
} satisfies Config.Config.Wrap<Options>
