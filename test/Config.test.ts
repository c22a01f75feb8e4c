import { assert, describe, it } from "@effect/vitest"
import * as Config from "effect/Config"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Credentials from "../src/Credentials.js"
import * as Connection from "../src/Connection.js"
import * as TaskHandler from "../src/TaskHandler.js"
import * as TaskSource from "../src/TaskSource.js"
import * as FaultProxy from "../src/testing/FaultProxy.js"

const env = (vars: Record<string, string>) => Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(vars))))

// Reads a config from the given variables and returns the error's text: it must name the variable.
const failure = <A>(config: Config.Config<A>, vars: Record<string, string>) =>
  Effect.flip(config).pipe(env(vars), Effect.map(String))

const minimal = { MASTER_ADDRESS: "127.0.0.1:9666", NODE_KEY: "w1" }

describe("configuration from the environment", () => {
  it.effect("reads every option of the connection, readiness, retry and task handler", () =>
    Effect.gen(function*() {
      const connection = yield* Connection.config(TaskSource.services).pipe(env({
        ...minimal,
        CONNECT_TIMEOUT: "3 seconds",
        LOOKUP_TIMEOUT: "5 seconds",
        RECONNECTING_LOOKUP_TIMEOUT: "1 minute",
        CALL_TIMEOUT: "750 millis",
        BREAKER_THRESHOLD: "7",
        RECONNECT_BASE: "100 millis",
        READINESS_BOUND: "12 seconds",
        PROBE_INTERVAL: "10 seconds",
        PROBE_SERVICE: "worker.v1.TaskService"
      }))
      assert.strictEqual(connection.address, "127.0.0.1:9666")
      assert.isTrue(Duration.equals(Duration.decode(connection.connectTimeout!), Duration.seconds(3)))
      assert.isTrue(Duration.equals(Duration.decode(connection.reconnectingLookupTimeout!), Duration.minutes(1)))
      assert.strictEqual(connection.breaker?.threshold, 7)
      assert.isTrue(Duration.equals(Duration.decode(connection.readiness!.bound!), Duration.seconds(12)))
      assert.isFunction(connection.readiness!.probe)
      const timings = yield* TaskHandler.config.pipe(env({ MAX_RUNNERS: "4", DRAIN_GRACE: "5 seconds" }))
      assert.strictEqual(timings.maxRunners, 4)
      assert.isTrue(Duration.equals(Duration.decode(timings.drainGrace!), Duration.seconds(5)))
      assert.isUndefined(timings.fetchInterval)
      const node = yield* TaskSource.config.pipe(env(minimal))
      assert.deepStrictEqual(node, { nodeKey: "w1", name: undefined, maxRunners: undefined })
    }))

  it.effect("not a number: a ConfigError naming the variable", () =>
    Effect.gen(function*() {
      assert.include(yield* failure(TaskHandler.config, { MAX_RUNNERS: "many" }), "MAX_RUNNERS")
      assert.include(yield* failure(Connection.config(TaskSource.services), { ...minimal, BREAKER_THRESHOLD: "0" }), "BREAKER_THRESHOLD")
    }))

  it.effect("a negative or unparsable duration: a ConfigError naming the variable", () =>
    Effect.gen(function*() {
      const negative = yield* failure(Connection.config(TaskSource.services), { ...minimal, CONNECT_TIMEOUT: "-5 seconds" })
      assert.include(negative, "CONNECT_TIMEOUT")
      const zero = yield* failure(TaskHandler.config, { FETCH_TIMEOUT: "0 seconds" })
      assert.include(zero, "FETCH_TIMEOUT")
      assert.include(zero, "positive duration")
      assert.include(yield* failure(TaskHandler.config, { STARTUP_WAIT: "soon" }), "STARTUP_WAIT")
    }))

  it.effect("a malformed address, or none: a ConfigError naming MASTER_ADDRESS", () =>
    Effect.gen(function*() {
      assert.include(yield* failure(Connection.config(TaskSource.services), { MASTER_ADDRESS: "master 9666" }), "MASTER_ADDRESS")
      assert.include(yield* failure(Connection.config(TaskSource.services), { MASTER_ADDRESS: "master:99999" }), "MASTER_ADDRESS")
      assert.include(yield* failure(Connection.config(TaskSource.services), {}), "MASTER_ADDRESS")
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
})
