import { assert, describe, it } from "@effect/vitest"
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Random from "effect/Random"
import * as Schedule from "effect/Schedule"
import * as Connection from "../src/Connection.js"
import * as Credentials from "../src/Credentials.js"
import * as Env from "../src/Env.js"
import * as GrpcChannel from "../src/GrpcChannel.js"
import * as Retry from "../src/Retry.js"
import * as TaskHandler from "../src/TaskHandler.js"
import * as TaskSource from "../src/TaskSource.js"
import * as FaultProxy from "../src/testing/FaultProxy.js"
import * as Master from "../src/testing/Master.js"
import { MasterLink } from "./fixtures/masterLink.js"

// The variables as the environment would hold them, read as every layerConfig reads the environment.
const env = (vars: Record<string, string>, prefix?: string) =>
  Effect.withConfigProvider(Env.provider({ env: vars, prefix }))

// Reads a config from the given variables and returns the error's text: it must be a ConfigError naming the variable.
const failure = <A>(config: Config.Config.Wrap<A>, vars: Record<string, string>) =>
  Effect.flip(Env.read(config)).pipe(
    env(vars),
    Effect.tap((error) => assert.isTrue(ConfigError.isConfigError(error), `a ConfigError: ${String(error)}`)),
    Effect.map(String)
  )

const minimal = { MASTER_ADDRESS: "127.0.0.1:9666", NODE_KEY: "w1" }

describe("configuration from the environment", () => {
  it.effect("reads every option of the connection, readiness, retry, task source and task handler", () =>
    Effect.gen(function*() {
      const seconds = (input: Duration.DurationInput | undefined) => Duration.toSeconds(Duration.decode(input!))
      const vars = {
        ...minimal,
        CONNECT_TIMEOUT: "4 seconds",
        LOOKUP_TIMEOUT: "5 seconds",
        RECONNECTING_LOOKUP_TIMEOUT: "1 minute",
        CALL_TIMEOUT: "750 millis",
        BREAKER_THRESHOLD: "7",
        BREAKER_HALF_OPEN_BASE: "2 seconds",
        BREAKER_HALF_OPEN_CAP: "20 seconds",
        REJECTED_RETRY_BASE: "1 minute",
        REJECTED_RETRY_CAP: "10 minutes",
        MAX_MESSAGE_BYTES: "65536",
        KEEPALIVE_TIME: "30 seconds",
        KEEPALIVE_TIMEOUT: "10 seconds",
        RECONNECT_BASE: "100 millis",
        RECONNECT_FACTOR: "3",
        RECONNECT_SHORT_CAP: "1 second",
        RECONNECT_SHORT_PHASE: "2 minutes",
        RECONNECT_LONG_CAP: "1 minute",
        RECONNECT_MAX_CAP: "5 minutes",
        RECONNECT_JITTER: "0.1",
        RECONNECT_SOON: "50 millis",
        RECONNECT_SOON_FRACTION: "0.1",
        RECONNECT_SOON_CAP: "2 seconds",
        CALL_RETRIES: "2",
        CALL_RETRY_BASE: "50 millis",
        CALL_RETRY_CAP: "1 second",
        LOOKUP_RETRIES: "1",
        LOOKUP_RETRY_INTERVAL: "3 seconds",
        READINESS_INTERVAL: "250 millis",
        READINESS_BOUND: "12 seconds",
        PROBE_TIMEOUT: "1 second",
        PROBE_INTERVAL: "10 seconds",
        PROBE_SERVICE: "worker.v1.TaskService",
        NODE_NAME: "worker one",
        MAX_RUNNERS: "4",
        FETCH_ATTEMPT_TIMEOUT: "2 seconds",
        FETCH_INTERVAL: "2 seconds",
        FETCH_TIMEOUT: "20 seconds",
        STARTUP_WAIT: "1 minute",
        FETCH_WAIT: "30 seconds",
        HEARTBEAT_INTERVAL: "16 seconds",
        DRAIN_GRACE: "5 seconds",
        FLUSH_TIMEOUT: "7 seconds"
      }
      const connection = yield* Env.read(Connection.config).pipe(env(vars))
      assert.strictEqual(connection.address, "127.0.0.1:9666")
      assert.deepStrictEqual(
        [
          connection.connectTimeout,
          connection.lookupTimeout,
          connection.reconnectingLookupTimeout,
          connection.callTimeout
        ]
          .map(seconds),
        [4, 5, 60, 0.75]
      )
      assert.strictEqual(connection.breaker?.threshold, 7)
      // Each schedule's first delays, jitter factor exactly 1: the variables shaped them.
      const delays = <In>(schedule: Schedule.Schedule<unknown, In> | undefined) =>
        Schedule.run(Schedule.delays(schedule!), 0, Array.from({ length: 6 }, () => undefined as In)).pipe(
          Effect.map((chunk) => Array.from(chunk, Duration.toMillis)),
          Effect.withRandom(Random.fixed([0.5]))
        )
      assert.deepStrictEqual(yield* delays(connection.reconnectSchedule), [100, 300, 900, 1000, 1000, 1000])
      // Two retries, then done (0); one retry, then done.
      assert.deepStrictEqual(yield* delays(connection.callSchedule), [50, 100, 0])
      assert.deepStrictEqual(yield* delays(connection.lookupSchedule), [3000, 0])
      assert.deepStrictEqual(yield* delays(connection.breaker?.halfOpenAfter), [2000, 4000, 8000, 16000, 20000, 20000])
      assert.deepStrictEqual(yield* delays(connection.rejectedSchedule), [
        60000,
        120000,
        240000,
        480000,
        600000,
        600000
      ])
      assert.deepStrictEqual(connection.channelOptions, {
        "grpc.max_receive_message_length": 65536,
        "grpc.keepalive_time_ms": 30_000,
        "grpc.keepalive_timeout_ms": 10_000
      })
      const readiness = connection.readiness!
      assert.deepStrictEqual(
        [readiness.interval, readiness.bound, readiness.probeTimeout, readiness.probeInterval].map(seconds),
        [0.25, 12, 1, 10]
      )
      assert.isFunction(readiness.probe)

      // The schedules' shapes, as their own configs read them.
      const reconnect = yield* Env.read(Retry.reconnectConfig).pipe(env(vars))
      assert.deepStrictEqual(
        [reconnect.base, reconnect.shortCap, reconnect.shortPhase, reconnect.longCap].map(seconds),
        [
          0.1,
          1,
          120,
          60
        ]
      )
      assert.strictEqual(reconnect.factor, 3)
      assert.deepStrictEqual(reconnect.jitter, { min: 0.9, max: 1.1 })
      assert.deepStrictEqual([reconnect.soon, reconnect.soonCap].map(seconds), [0.05, 2])
      assert.strictEqual(reconnect.soonFraction, 0.1)
      assert.strictEqual(seconds(reconnect.maxCap), 300)
      const call = yield* Env.read(Retry.callConfig).pipe(env(vars))
      assert.deepStrictEqual([call.retries, seconds(call.base), seconds(call.cap)], [2, 0.05, 1])
      const lookup = yield* Env.read(Retry.lookupConfig).pipe(env(vars))
      assert.deepStrictEqual([lookup.retries, seconds(lookup.interval)], [1, 3])

      const node = yield* Env.read(TaskSource.config).pipe(env(vars))
      assert.deepStrictEqual([node.nodeKey, node.name, node.maxRunners, seconds(node.fetchAttemptTimeout)], [
        "w1",
        "worker one",
        4,
        2
      ])
      const handler = yield* Env.read(TaskHandler.config).pipe(env(vars))
      assert.deepStrictEqual(
        [
          handler.fetchWait,
          handler.fetchInterval,
          handler.fetchTimeout,
          handler.startupWait,
          handler.heartbeatInterval,
          handler.drainGrace,
          handler.flushTimeout
        ].map(seconds),
        [30, 2, 20, 60, 16, 5, 7]
      )
    }))

  it.effect("absent variables leave every default in place", () =>
    Effect.gen(function*() {
      const connection = yield* Env.read(Connection.config).pipe(env(minimal))
      assert.isUndefined(connection.connectTimeout)
      assert.isUndefined(connection.rejectedSchedule)
      assert.isUndefined(connection.breaker?.halfOpenAfter)
      assert.deepStrictEqual(connection.channelOptions, {})
      const handler = yield* Env.read(TaskHandler.config).pipe(env({}))
      assert.isUndefined(handler.fetchInterval)
      const node = yield* Env.read(TaskSource.config).pipe(env(minimal))
      assert.deepStrictEqual(node, {
        nodeKey: "w1",
        name: undefined,
        maxRunners: undefined,
        fetchAttemptTimeout: undefined
      })
    }))

  it.effect("a bad value fails the layer at start with a ConfigError naming the variable, before any dial", () =>
    Effect.gen(function*() {
      let dials = 0
      const dialer = Layer.succeed(GrpcChannel.Dialer, {
        dial: () => Effect.sync(() => dials++).pipe(Effect.zipRight(Effect.die("no dial expected")))
      })
      const error = yield* Layer.build(MasterLink.layerConfig()).pipe(
        Effect.provide(dialer),
        Effect.scoped,
        Effect.flip,
        env({ ...minimal, KEEPALIVE_TIME: "often" })
      )
      assert.isTrue(ConfigError.isConfigError(error), String(error))
      assert.include(String(error), "KEEPALIVE_TIME")
      assert.strictEqual(dials, 0)
    }))

  it.effect("not a number: a ConfigError naming the variable", () =>
    Effect.gen(function*() {
      assert.include(yield* failure(TaskSource.config, { ...minimal, MAX_RUNNERS: "many" }), "MAX_RUNNERS")
      assert.include(
        yield* failure(Connection.config, { ...minimal, BREAKER_THRESHOLD: "some" }),
        "BREAKER_THRESHOLD"
      )
      assert.include(
        yield* failure(Connection.config, { ...minimal, MAX_MESSAGE_BYTES: "4MB" }),
        "MAX_MESSAGE_BYTES"
      )
      assert.include(
        yield* failure(Connection.config, { ...minimal, CALL_RETRIES: "three" }),
        "CALL_RETRIES"
      )
      assert.include(yield* failure(Retry.reconnectConfig, { RECONNECT_FACTOR: "double" }), "RECONNECT_FACTOR")
    }))

  it.effect("a number out of range: a ConfigError naming the variable and the range", () =>
    Effect.gen(function*() {
      const zero = yield* failure(Connection.config, { ...minimal, BREAKER_THRESHOLD: "0" })
      assert.include(zero, "BREAKER_THRESHOLD")
      assert.include(zero, "from 1")
      assert.include(yield* failure(Retry.reconnectConfig, { RECONNECT_JITTER: "1.5" }), "RECONNECT_JITTER")
    }))

  it.effect("a first delay above its cap: a ConfigError naming both variables", () =>
    Effect.gen(function*() {
      const call = yield* failure(Connection.config, { ...minimal, CALL_RETRY_BASE: "5 seconds" })
      assert.match(call, /^\(Invalid data at \w+: "CALL_RETRY_BASE \(\w+\) must not exceed CALL_RETRY_CAP \(\w+\)"\)$/)
      const breaker = yield* failure(Connection.config, {
        ...minimal,
        BREAKER_HALF_OPEN_BASE: "1 minute",
        BREAKER_HALF_OPEN_CAP: "10 seconds"
      })
      assert.match(
        breaker,
        /^\(Invalid data at \w+: "BREAKER_HALF_OPEN_BASE \(\w+\) must not exceed BREAKER_HALF_OPEN_CAP \(\w+\)"\)$/
      )
      const rejected = yield* failure(Connection.config, {
        ...minimal,
        REJECTED_RETRY_CAP: "10 seconds"
      })
      assert.match(
        rejected,
        /^\(Invalid data at \w+: "REJECTED_RETRY_BASE \(\w+\) must not exceed REJECTED_RETRY_CAP \(\w+\)"\)$/
      )
      assert.match(
        yield* failure(Retry.reconnectConfig, { RECONNECT_LONG_CAP: "1 second" }),
        /^\(Invalid data at \w+: "RECONNECT_SHORT_CAP \(\w+\) must not exceed RECONNECT_LONG_CAP \(\w+\)"\)$/
      )
      assert.match(
        yield* failure(Retry.reconnectConfig, { RECONNECT_BASE: "3 seconds" }),
        /^\(Invalid data at \w+: "RECONNECT_BASE \(\w+\) must not exceed RECONNECT_SHORT_CAP \(\w+\)"\)$/
      )
      assert.match(
        yield* failure(Retry.reconnectConfig, { RECONNECT_SOON: "3 minutes" }),
        /^\(Invalid data at \w+: "RECONNECT_SOON \(\w+\) must not exceed RECONNECT_SOON_CAP \(\w+\)"\)$/
      )
    }))

  it.effect("a negative or unparsable duration: a ConfigError naming the variable", () =>
    Effect.gen(function*() {
      const negative = yield* failure(Connection.config, {
        ...minimal,
        CONNECT_TIMEOUT: "-5 seconds"
      })
      assert.include(negative, "CONNECT_TIMEOUT")
      const zero = yield* failure(TaskHandler.config, { FETCH_TIMEOUT: "0 seconds" })
      assert.include(zero, "FETCH_TIMEOUT")
      assert.include(zero, "positive duration")
      assert.include(yield* failure(TaskHandler.config, { STARTUP_WAIT: "soon" }), "STARTUP_WAIT")
    }))

  it.effect("a malformed address, or none: a ConfigError naming MASTER_ADDRESS", () =>
    Effect.gen(function*() {
      assert.include(
        yield* failure(Connection.config, { MASTER_ADDRESS: "master 9666" }),
        "MASTER_ADDRESS"
      )
      assert.include(
        yield* failure(Connection.config, { MASTER_ADDRESS: "master:99999" }),
        "MASTER_ADDRESS"
      )
      assert.include(yield* failure(Connection.config, {}), "MASTER_ADDRESS")
      // A host without its port would dial 443: refused, naming the variable and what is missing.
      const portless = yield* failure(Connection.config, { MASTER_ADDRESS: "127.0.0.1" })
      assert.include(portless, "MASTER_ADDRESS")
      assert.include(portless, "has no port")
    }))

  it.effect("an unknown fault kind: a ConfigError naming the variable", () =>
    Effect.gen(function*() {
      const error = yield* failure(FaultProxy.faultKind("DEMO_FAULT"), { DEMO_FAULT: "meteor" })
      assert.include(error, "DEMO_FAULT")
      assert.include(error, "reset, blackhole")
    }))

  it.effect("an unreadable file: a ConfigError naming the variable", () =>
    Effect.gen(function*() {
      const error = yield* failure(Credentials.config, { MASTER_CA_FILE: "/nonexistent/ca.pem" })
      assert.include(error, "MASTER_CA_FILE")
      assert.include(error, "readable file")
      // A directory is not a certificate either.
      assert.include(yield* failure(Credentials.config, { MASTER_KEY_FILE: "/" }), "MASTER_KEY_FILE")
    }))

  it.effect("a missing node key: a ConfigError naming NODE_KEY", () =>
    Effect.gen(function*() {
      assert.include(yield* failure(TaskSource.config, {}), "NODE_KEY")
    }))

  it.effect("the embedded master's options, as the master command reads them: MASTER_PORT, not PORT", () =>
    Effect.gen(function*() {
      const read = yield* Env.read(Master.config).pipe(
        env({ MASTER_PORT: "0", MASTER_REDELIVER_AFTER: "3 seconds", MASTER_MAX_HAND_OUTS: "2", PORT: "80" })
      )
      assert.deepStrictEqual(read, {
        port: 0,
        host: undefined,
        redeliverAfter: Duration.seconds(3),
        maxHandOuts: 2
      })
      const error = yield* Effect.flip(Layer.build(Master.layerConfig())).pipe(
        Effect.scoped,
        env({ MASTER_MAX_HAND_OUTS: "0" })
      )
      assert.isTrue(ConfigError.isConfigError(error), String(error))
      assert.include(String(error), "MASTER_MAX_HAND_OUTS")
    }))
})

describe("configuration under a prefix, and what it says", () => {
  const noDial = Layer.succeed(GrpcChannel.Dialer, { dial: () => Effect.die("no dial expected") })

  it.effect("a prefix reads its own variables; every error names them, a rule's and a group's included", () =>
    Effect.gen(function*() {
      const east = { EAST_MASTER_ADDRESS: "127.0.0.1:9666", EAST_CALL_TIMEOUT: "2 seconds", CALL_TIMEOUT: "9 seconds" }
      const read = yield* Env.read(Connection.config).pipe(env(east, "EAST_"))
      assert.strictEqual(read.address, "127.0.0.1:9666")
      assert.strictEqual(Duration.toSeconds(Duration.decode(read.callTimeout!)), 2)
      const bad = yield* Effect.flip(Env.read(Connection.config)).pipe(
        env(
          { EAST_MASTER_ADDRESS: "127.0.0.1:9666", EAST_CALL_TIMEOUT: "often", EAST_CALL_RETRY_BASE: "5 seconds" },
          "EAST"
        )
      )
      assert.include(String(bad), "Invalid data at EAST_CALL_TIMEOUT: \"expected a duration such as 10 seconds")
      assert.include(String(bad), "EAST_CALL_RETRY_BASE (5s) must not exceed EAST_CALL_RETRY_CAP (2s)")
      assert.notInclude(String(bad), "Invalid data at :")
      const missing = yield* Effect.flip(Env.read(TaskSource.config)).pipe(env({}, "WEST_"))
      assert.strictEqual(String(missing), "(Missing data at WEST_NODE_KEY: \"WEST_NODE_KEY is required\")")
      const cert = yield* Effect.flip(Env.read(Credentials.config)).pipe(
        env({ WEST_MASTER_CERT_FILE: "package.json" }, "WEST_")
      )
      assert.include(String(cert), "Invalid data at WEST_MASTER_CERT_FILE")
      assert.include(String(cert), "set WEST_MASTER_KEY_FILE too")
      assert.include(
        yield* failure(Credentials.config, { MASTER_TOKEN: "abc" }),
        "MASTER_ALLOW_INSECURE_TOKEN=true"
      )
    }))

  it.effect("Env.prefixed builds one layer under its prefix, and no other", () =>
    Effect.gen(function*() {
      const vars = { MASTER_ADDRESS: "127.0.0.1:1", EAST_MASTER_ADDRESS: "127.0.0.1:2" }
      const seen: Array<string> = []
      const probe = Layer.effectDiscard(
        Effect.map(Env.read(Connection.config.address), (value) => void seen.push(value))
      )
      yield* Layer.build(Layer.mergeAll(probe, probe.pipe(Env.prefixed("EAST_")))).pipe(Effect.scoped, env(vars))
      assert.deepStrictEqual(seen.sort(), ["127.0.0.1:1", "127.0.0.1:2"])
    }))

  it.effect("Env.check, provided first, stops a missing NODE_KEY before the connection dials", () =>
    Effect.gen(function*() {
      const error = yield* Layer.build(
        TaskSource.layerConfig({ connection: MasterLink }).pipe(
          Layer.provide(MasterLink.layerConfig()),
          Layer.provide(noDial),
          Layer.provide(Env.check(Connection.config, TaskSource.config))
        )
      ).pipe(Effect.scoped, Effect.flip, env({ MASTER_ADDRESS: "127.0.0.1:9666" }))
      assert.strictEqual(String(error), "(Missing data at NODE_KEY: \"NODE_KEY is required\")")
    }))
})
