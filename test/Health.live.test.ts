import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import type * as HttpServer from "@effect/platform/HttpServer"
import { assert, describe, it } from "@effect/vitest"
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import { createServer } from "node:http"
import * as Connection from "../src/Connection.js"
import * as Env from "../src/Env.js"
import * as GrpcChannel from "../src/GrpcChannel.js"
import * as Health from "../src/Health.js"
import type * as InvalidOption from "../src/InvalidOption.js"
import { NodeHealth } from "../src/node/index.js"
import * as Readiness from "../src/Readiness.js"
import * as TaskSource from "../src/TaskSource.js"
import * as Master from "../src/testing/Master.js"
import { MasterLink } from "./fixtures/masterLink.js"
import { eventually } from "./fixtures/poll.js"
import { workerWithHealth } from "./fixtures/worker.js"

const { Failed, Passed } = Readiness.CheckResult

const readyReport: Readiness.ReadinessReport = {
  generation: 2,
  elapsed: Duration.millis(1500),
  rounds: 4,
  checks: { channel: Passed(), registered: Passed(), probe: Passed() }
}

const probeTimedOut: Readiness.ReadinessReport = {
  generation: 2,
  elapsed: Duration.millis(2000),
  rounds: 1,
  checks: { channel: Passed(), registered: Passed(), probe: Failed({ message: "Timeout after 2s" }) }
}

const serve = Effect.gen(function*() {
  const status = yield* SubscriptionRef.make<Readiness.ReadinessStatus>({ ready: false, report: probeTimedOut })
  const context = yield* Layer.build(
    NodeHealth.layer({ host: "127.0.0.1", port: 0 }).pipe(
      // A Readiness the test drives by hand: no connection behind it.
      Layer.provide(Layer.effect(Readiness.Readiness, Readiness.fromStatus(status, Duration.zero)))
    )
  )
  return { status, health: Context.get(context, Health.Health) }
})

const request = (url: string, init: RequestInit = {}) =>
  Effect.tryPromise(async () => {
    const response = await fetch(url, { ...init, signal: AbortSignal.timeout(5000) })
    return { status: response.status, headers: response.headers, body: await response.text() }
  })

// The text format, line by line: a sample is `name{label="value",...} value`, and follows its family's # TYPE.
const sampleLine =
  /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")*\})? (NaN|[+-]Inf|[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)$/
const typeLine = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/

// A series' identity whatever the order of its labels: its name and its labels sorted.
const seriesKey = (name: string, labels: Record<string, string> = {}) =>
  `${name} ${JSON.stringify(Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : 1)))}`

const parse = (text: string) => {
  assert.isTrue(text.endsWith("\n"), "the text ends with a line feed")
  const types = new Map<string, string>()
  const samples = new Map<string, number>()
  const series = new Map<string, number>()
  let family: string | undefined
  for (const line of text.slice(0, -1).split("\n")) {
    if (line.startsWith("#")) {
      const type = typeLine.exec(line)
      if (type !== null) {
        assert.isFalse(types.has(type[1]!), `one # TYPE line for ${type[1]}`)
        types.set(type[1]!, type[2]!)
        family = type[1]
      }
      continue
    }
    const match = sampleLine.exec(line)
    assert.isNotNull(match, `not a sample line: ${JSON.stringify(line)}`)
    const [, name, labels = "", value] = match!
    const suffixed = types.get(family!) === "histogram" || types.get(family!) === "summary"
    assert.isTrue(
      name === family || (suffixed && [`${family}_bucket`, `${family}_sum`, `${family}_count`].includes(name!)),
      `${name} is not in the family ${family}`
    )
    const number = value === "+Inf" ? Infinity : value === "-Inf" ? -Infinity : Number(value)
    samples.set(`${name}${labels}`, number)
    const pairs = [...labels.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"/g)].map((
      m
    ) => [m[1]!, m[2]!])
    series.set(seriesKey(name!, Object.fromEntries(pairs)), number)
  }
  return { types, samples, series }
}

describe("Health (live HTTP on 127.0.0.1)", () => {
  it.scopedLive("/healthz answers 200 {status: ok} while the connection is not ready", () =>
    Effect.gen(function*() {
      const { health } = yield* serve
      assert.isAbove(health.port, 0)
      assert.strictEqual(health.url, `http://127.0.0.1:${health.port}`)
      const response = yield* request(`${health.url}/healthz`)
      assert.strictEqual(response.status, 200)
      assert.deepStrictEqual(JSON.parse(response.body), { status: "ok" })
      assert.include(response.headers.get("content-type"), "application/json")
    }), 10_000)

  it.scopedLive(
    "/readyz is 503 naming the failing check, 200 with the report once ready, 503 again after a loss",
    () =>
      Effect.gen(function*() {
        const { health, status } = yield* serve
        const notReady = yield* request(`${health.url}/readyz`)
        assert.strictEqual(notReady.status, 503)
        assert.deepStrictEqual(JSON.parse(notReady.body), {
          ready: false,
          failing: "probe",
          reason: "probe: Timeout after 2s",
          report: {
            generation: 2,
            elapsedMs: 2000,
            rounds: 1,
            checks: {
              channel: { status: "passed" },
              registered: { status: "passed" },
              probe: { status: "failed", message: "Timeout after 2s" }
            }
          }
        })

        yield* SubscriptionRef.set(status, { ready: true, report: readyReport })
        const ready = yield* request(`${health.url}/readyz`)
        assert.strictEqual(ready.status, 200)
        assert.deepStrictEqual(JSON.parse(ready.body), {
          ready: true,
          report: {
            generation: 2,
            elapsedMs: 1500,
            rounds: 4,
            checks: { channel: { status: "passed" }, registered: { status: "passed" }, probe: { status: "passed" } }
          }
        })

        yield* SubscriptionRef.set(status, {
          ready: false,
          report: {
            ...readyReport,
            checks: { ...readyReport.checks, channel: Failed({ message: "channel left READY for IDLE" }) }
          }
        })
        const lost = yield* request(`${health.url}/readyz`)
        assert.strictEqual(lost.status, 503)
        const body = JSON.parse(lost.body)
        assert.strictEqual(body.failing, "channel")
        assert.strictEqual(body.reason, "channel: channel left READY for IDLE")
        // /healthz does not follow readiness: the process is alive.
        assert.strictEqual((yield* request(`${health.url}/healthz`)).status, 200)
      }),
    10_000
  )

  it.scopedLive(
    "/metrics has the test's counters, gauges, histograms and tags in a parseable text format 0.0.4",
    () =>
      Effect.gen(function*() {
        const { health } = yield* serve
        const requests = Metric.counter("health_test_requests_total", {
          description: "Requests seen.",
          incremental: true
        })
        yield* Metric.increment(Metric.tagged(requests, "route", "/readyz"))
        yield* Metric.incrementBy(Metric.tagged(requests, "route", "say \"hi\"\\now"), 2)
        yield* Metric.set(Metric.tagged(Metric.gauge("health_test_runners"), "node", "worker-1"), 7)
        // A counter that is not incremental may go down: exposed as a gauge.
        yield* Metric.incrementBy(Metric.counter("health_test_depth"), -3)
        const latency = Metric.histogram(
          "health_test_fetch_ms",
          MetricBoundaries.fromIterable([10, 100, 1000]),
          "Fetch time."
        )
        for (const ms of [5, 50, 50, 500, 5000]) yield* Metric.update(Metric.tagged(latency, "service", "task"), ms)

        const response = yield* request(`${health.url}/metrics`)
        assert.strictEqual(response.status, 200)
        assert.match(response.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/)
        const { samples, types } = parse(response.body)
        assert.include(response.body, "# HELP health_test_requests_total Requests seen.\n")
        assert.strictEqual(types.get("health_test_requests_total"), "counter")
        assert.strictEqual(types.get("health_test_runners"), "gauge")
        assert.strictEqual(types.get("health_test_depth"), "gauge")
        assert.strictEqual(types.get("health_test_fetch_ms"), "histogram")
        assert.strictEqual(samples.get("health_test_requests_total{route=\"/readyz\"}"), 1)
        assert.strictEqual(samples.get("health_test_requests_total{route=\"say \\\"hi\\\"\\\\now\"}"), 2)
        assert.strictEqual(samples.get("health_test_runners{node=\"worker-1\"}"), 7)
        assert.strictEqual(samples.get("health_test_depth"), -3)
        const buckets = ["10", "100", "1000", "+Inf"].map((le) =>
          samples.get(`health_test_fetch_ms_bucket{service="task",le="${le}"}`)
        )
        assert.deepStrictEqual(buckets, [1, 3, 4, 5], "cumulative: values <= le")
        assert.strictEqual(samples.get("health_test_fetch_ms_sum{service=\"task\"}"), 5605)
        assert.strictEqual(samples.get("health_test_fetch_ms_count{service=\"task\"}"), 5)
      }),
    10_000
  )

  it.scopedLive(
    "/metrics of a real worker through a master restart: the library's own metrics move",
    () =>
      Effect.gen(function*() {
        const master = yield* Master.make()
        const workerLayer = workerWithHealth(master.address, "w1")
        const context = yield* Layer.build(workerLayer)
        const health = Context.get(context, Health.Health)
        const conn = Context.get(context, MasterLink)
        const scrape = Effect.map(request(`${health.url}/metrics`), (response) => parse(response.body))
        const readyIn = (generation: number) =>
          conn.changes.pipe(
            Stream.filter((state) => state._tag === "Ready" && state.generation === generation),
            Stream.runHead,
            Effect.timeoutFail({
              duration: "10 seconds",
              onTimeout: () => new Error(`generation ${generation} Ready within 10 s`)
            })
          )
        // A sample by its name and label set, in whatever order the labels come.
        const sampleOf = (scraped: ReturnType<typeof parse>, name: string, labels: Record<string, string> = {}) =>
          scraped.series.get(seriesKey(name, labels))
        // The task handler's metrics name its master and its node.
        const worker = { address: master.address, node: "w1" }
        const finish = Effect.gen(function*() {
          const id = yield* master.enqueue({ payload: JSON.stringify({ n: 1 }) })
          yield* eventually(master.task(id), (task) => task.status === "FINISHED", "10 seconds", `task ${id} finished`)
        })

        yield* readyIn(1)
        // Metrics are process-wide: the test reads what this run added.
        const before = yield* scrape
        yield* finish
        yield* master.stop
        yield* conn.changes.pipe(Stream.filter((state) => state._tag !== "Ready"), Stream.runHead)
        yield* master.restart
        yield* readyIn(2)
        yield* finish
        // The FINISHED report leaves the outbox when the master's reply is back: a moment after the master has it.
        const after = yield* eventually(
          scrape,
          (scraped) => sampleOf(scraped, "grpc_resilience_outbox_depth", worker) === 0,
          "5 seconds",
          "the outbox emptied"
        )
        const added = (name: string, labels: Record<string, string> = {}) =>
          (sampleOf(after, name, labels) ?? 0) - (sampleOf(before, name, labels) ?? 0)
        // The connection's own metrics carry its master's address.
        const address = { address: master.address }

        assert.isAtLeast(added("grpc_resilience_connection_attempts_total", address), 1)
        assert.isAtLeast(added("grpc_resilience_connection_successes_total", address), 1)
        assert.strictEqual(sampleOf(after, "grpc_resilience_connection_state", { ...address, state: "Ready" }), 1)
        assert.strictEqual(
          sampleOf(after, "grpc_resilience_connection_state", { ...address, state: "Reconnecting" }),
          0
        )
        assert.strictEqual(sampleOf(after, "grpc_resilience_connection_generation", address), 2)
        assert.isAtLeast(added("grpc_resilience_readiness_seconds_count", address), 1)
        assert.isAtLeast(added("grpc_resilience_registration_seconds_count", address), 1)
        assert.strictEqual(sampleOf(after, "grpc_resilience_breaker_state", { ...address, state: "Closed" }), 1)
        // The worker's: tasks, the first fetch after the reconnection, its startup.
        assert.strictEqual(added("grpc_resilience_ready_to_first_fetch_seconds_count", worker), 1)
        assert.strictEqual(added("grpc_resilience_tasks_total", { ...worker, status: "FINISHED" }), 2)
        assert.isDefined(sampleOf(after, "grpc_resilience_task_handler_startup_seconds", worker))
        // Nothing of the task handler's goes unlabelled.
        assert.isUndefined(sampleOf(after, "grpc_resilience_tasks_total", { status: "FINISHED" }))
      }),
    30_000
  )

  it.scopedLive(
    "an unknown path is 404, another method on a known path 405 with Allow, HEAD is GET",
    () =>
      Effect.gen(function*() {
        const { health } = yield* serve
        assert.strictEqual((yield* request(`${health.url}/nope`)).status, 404)
        const post = yield* request(`${health.url}/healthz`, { method: "POST" })
        assert.strictEqual(post.status, 405)
        assert.strictEqual(post.headers.get("allow"), "GET, HEAD")
        assert.strictEqual((yield* request(`${health.url}/readyz?verbose=1`, { method: "DELETE" })).status, 405)
        assert.strictEqual((yield* request(`${health.url}/healthz`, { method: "HEAD" })).status, 200)
        assert.strictEqual((yield* request(`${health.url}/readyz?verbose=1`)).status, 503)
      }),
    10_000
  )

  it.scopedLive("two endpoints on the app's own tags, each reporting its own readiness", () =>
    Effect.gen(function*() {
      class EastHealth extends Context.Tag("test/EastHealth")<EastHealth, Health.Health["Type"]>() {}
      class WestHealth extends Context.Tag("test/WestHealth")<WestHealth, Health.Health["Type"]>() {}
      const endpoint = <Self>(tag: Context.Tag<Self, Health.Health["Type"]>, ready: boolean) =>
        Layer.scoped(tag, Health.make()).pipe(
          Layer.provide(NodeHttpServer.layer(createServer, { host: "127.0.0.1", port: 0 })),
          Layer.provide(Layer.effect(
            Readiness.Readiness,
            Effect.flatMap(
              SubscriptionRef.make<Readiness.ReadinessStatus>({ ready, report: ready ? readyReport : probeTimedOut }),
              (status) => Readiness.fromStatus(status, Duration.zero)
            )
          ))
        )
      const context = yield* Layer.build(Layer.merge(endpoint(EastHealth, true), endpoint(WestHealth, false)))
      const east = Context.get(context, EastHealth)
      const west = Context.get(context, WestHealth)
      assert.notStrictEqual(east.port, west.port)
      assert.strictEqual((yield* request(`${east.url}/readyz`)).status, 200)
      assert.strictEqual((yield* request(`${west.url}/readyz`)).status, 503)
    }))

  it.scopedLive("an endpoint per master, each on the app's tag and its connection's readiness", () =>
    Effect.gen(function*() {
      class East extends Connection.Tag("test/East", TaskSource.services)<East>() {}
      class West extends Connection.Tag("test/West", TaskSource.services)<West>() {}
      class EastHealth extends Context.Tag("test/EastHealth")<EastHealth, Health.Health["Type"]>() {}
      class WestHealth extends Context.Tag("test/WestHealth")<WestHealth, Health.Health["Type"]>() {}
      const master = yield* Master.make()
      // West's master is not there: a port that refuses.
      const closed = yield* Master.make()
      const westAddress = closed.address
      yield* closed.stop
      const onItsOwnServer = <Self>(layer: Layer.Layer<Self, never, HttpServer.HttpServer | East | West>) =>
        layer.pipe(Layer.provide(NodeHttpServer.layer(createServer, { host: "127.0.0.1", port: 0 })))
      const context = yield* Layer.build(
        Layer.merge(
          onItsOwnServer(Layer.scoped(EastHealth, Health.make({ connection: East }))),
          onItsOwnServer(Layer.scoped(WestHealth, Health.make({ connection: West })))
        ).pipe(
          Layer.provideMerge(Layer.merge(
            East.layer({ address: master.address }),
            West.layer({ address: westAddress, reconnectSchedule: Schedule.spaced("200 millis") })
          )),
          Layer.provide(GrpcChannel.layer)
        )
      )
      const east = Context.get(context, EastHealth)
      const west = Context.get(context, WestHealth)
      yield* eventually(request(`${east.url}/readyz`), (r) => r.status === 200, "10 seconds", "East ready")
      const westReady = yield* request(`${west.url}/readyz`)
      assert.strictEqual(westReady.status, 503)
      assert.strictEqual(JSON.parse(westReady.body).failing, "channel", "West's own check, not East's")
    }))

  it.scopedLive("closing the layer's scope closes the port", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const { health } = yield* Scope.extend(serve, scope)
      assert.strictEqual((yield* request(`${health.url}/healthz`)).status, 200)
      yield* Scope.close(scope, Exit.void)
      const refused = yield* Effect.flip(request(`${health.url}/healthz`))
      assert.include(String((refused.error as Error).cause), "ECONNREFUSED")
    }), 10_000)

  it.scopedLive(
    "a bad HEALTH_PORT fails with a ConfigError naming it; a bad port option with InvalidOption",
    () =>
      Effect.gen(function*() {
        const readiness = Layer.effect(
          Readiness.Readiness,
          Effect.flatMap(
            SubscriptionRef.make<Readiness.ReadinessStatus>({ ready: true, report: readyReport }),
            (status) => Readiness.fromStatus(status, Duration.zero)
          )
        )
        const fromEnv = (env: Record<string, string>, options?: Config.Config.Wrap<Health.Options>) =>
          Layer.build(NodeHealth.layerConfig({}, options).pipe(Layer.provide(readiness))).pipe(
            Effect.withConfigProvider(Env.provider({ env }))
          )
        const badPort = yield* Effect.flip(fromEnv({ HEALTH_PORT: "90x" }))
        assert.isTrue(ConfigError.isConfigError(badPort) && badPort._op === "InvalidData")
        assert.include(String(badPort), "HEALTH_PORT")
        const outOfRange = yield* Effect.flip(fromEnv({ HEALTH_PORT: "70000" }))
        assert.include(String(outOfRange), "HEALTH_PORT")

        // HEALTH_HOST is read from the environment; the port is overridden to 0 to take a free one.
        const context = yield* fromEnv({ HEALTH_HOST: "127.0.0.1" }, { ...Health.config, port: Config.succeed(0) })
        const health = Context.get(context, Health.Health)
        assert.strictEqual(health.hostname, "127.0.0.1")
        assert.strictEqual((yield* request(`${health.url}/healthz`)).status, 200)

        const invalid = yield* Effect.flip(
          Layer.build(NodeHealth.layer({ port: 70000 }).pipe(Layer.provide(readiness)))
        )
        assert.strictEqual(invalid._tag, "InvalidOption")
        assert.strictEqual((invalid as InvalidOption.InvalidOption).option, "port")
      }),
    10_000
  )
})
