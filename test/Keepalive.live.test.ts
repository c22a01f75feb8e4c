/**
 * Keepalive against a master that enforces a client ping policy the way
 * grpc-go's and C-core's defaults do (a real C-core server; see
 * fixtures/pingPolicy.ts), scaled down in time: its 5 minutes are 1 s here.
 * The worker holds a server stream open and makes no other call (no probe
 * round while Ready), as a worker whose runners are all busy does.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import * as Metric from "effect/Metric"
import * as Stream from "effect/Stream"
import * as Connection from "../src/Connection.js"
import * as GrpcChannel from "../src/GrpcChannel.js"
import * as Metrics from "../src/Metrics.js"
import { EchoClient } from "./fixtures/echo.js"
import * as PingPolicy from "./fixtures/pingPolicy.js"
import { eventually } from "./fixtures/poll.js"

const underCi = process.env["CI"] === "true"
if (PingPolicy.unavailable !== undefined && !underCi) {
  console.warn(`skipping the keepalive tests: ${PingPolicy.unavailable}`)
}

// The servers' default minimum, 5 minutes, is this here; their default strikes, 2, are 2.
const minPingMs = 1_000
const scale = minPingMs / 300_000
const maxStrikes = 2

// A worker on the master: the stream open, no other call. The probe would be a call (data from the master resets
// the strikes), so it passes without one and does not run again while Ready.
const worker = (address: string, keepaliveTime: number) =>
  Effect.gen(function*() {
    const connection = yield* Connection.make({
      address,
      services: { echo: EchoClient },
      channelOptions: { "grpc.keepalive_time_ms": keepaliveTime },
      readiness: { probe: () => Effect.void, probeInterval: "1 hour" }
    })
    yield* Effect.forkScoped(Stream.runDrain(connection.stream("echo", "watch", { generation: 0 })))
    return connection
  })

const warnings = (lines: Array<string>) =>
  Logger.replace(
    Logger.defaultLogger,
    Logger.make(({ logLevel, message }) => {
      if (logLevel._tag === "Warning") lines.push(String(Array.isArray(message) ? message.join(" ") : message))
    })
  )

describe.skipIf(PingPolicy.unavailable !== undefined && !underCi)("keepalive against a ping policy, for real", () => {
  it.scopedLive(
    "the default interval, scaled as the policy is, is never refused: one connection for 12 times the minimum",
    () =>
      Effect.gen(function*() {
        if (PingPolicy.unavailable !== undefined) {
          return yield* Effect.dieMessage(`under CI the keepalive tests must run: ${PingPolicy.unavailable}`)
        }
        const master = yield* PingPolicy.start({ minPingMs, maxStrikes })
        const keepaliveTime = Math.round(GrpcChannel.defaultKeepaliveTime * scale)
        assert.isAbove(keepaliveTime, minPingMs)
        yield* worker(master.address, keepaliveTime)
        yield* eventually(master.connections, (c) => c.length === 1, "10 seconds", "no connection")
        // 12 s here is an hour at the real scale: 11 pings at 1033 ms. Pings every 20 s (the old default) against
        // 5 minutes would be pings every 67 ms here, refused at the third strike.
        yield* Effect.sleep(12 * minPingMs)
        const connections = yield* master.connections
        assert.strictEqual(connections.length, 1, "one connection, never ended")
        const [only] = connections
        assert.isUndefined(only!.goaway)
        assert.isAtLeast(only!.pings.length, 10)
        // grpc-js starts an interval at the answer to the last ping: the server sees them at least that far apart.
        assert.isAtLeast(PingPolicy.shortestGap(only!), keepaliveTime - 5)
      }).pipe(Effect.provide(GrpcChannel.layer)),
    30_000
  )

  it.scopedLive(
    "an interval the policy refuses is doubled by each too_many_pings, and the next connection keeps it",
    () =>
      Effect.gen(function*() {
        if (PingPolicy.unavailable !== undefined) {
          return yield* Effect.dieMessage(`under CI the keepalive tests must run: ${PingPolicy.unavailable}`)
        }
        const master = yield* PingPolicy.start({ minPingMs, maxStrikes })
        // 300 ms: refused (3 strikes at 300 ms gaps, about 1.2 s in); 600 ms: refused (about 2.4 s in); 1200 ms:
        // accepted. A new channel starting again at 300 ms would be refused every 1.2 s, forever.
        const configured = 300
        const lines: Array<string> = []
        const connection = yield* worker(master.address, configured).pipe(Effect.provide(warnings(lines)))
        const refusals = Metric.tagged(Metrics.keepaliveRefusals, "address", connection.address)
        // The third connection, with 5 pings (5 times the minimum) and still open.
        const connections = yield* eventually(
          master.connections,
          (c) => c.length >= 3 && c[2]!.pings.length >= 5,
          "20 seconds",
          "no third connection with 5 pings"
        )
        assert.strictEqual(connections.length, 3, "no connection after the third")
        const [first, second, third] = connections as [PingPolicy.Observed, PingPolicy.Observed, PingPolicy.Observed]
        for (const [refused, interval] of [[first, configured], [second, 2 * configured]] as const) {
          assert.deepStrictEqual(refused.goaway && { code: refused.goaway.code, data: refused.goaway.data }, {
            code: 11, // ENHANCE_YOUR_CALM
            data: "too_many_pings"
          })
          // The first ping is no strike, the next three are: the fourth ends it. On a loaded machine a ping late
          // enough to keep the policy is no strike either, and the connection lasts a ping longer.
          assert.isAtLeast(refused.pings.length, maxStrikes + 2)
          assert.isAtLeast(PingPolicy.shortestGap(refused), interval - 5)
        }
        assert.isUndefined(third.goaway)
        assert.isUndefined(third.closed)
        assert.isAtLeast(PingPolicy.shortestGap(third), 4 * configured - 5)
        assert.strictEqual((yield* Metric.value(refusals)).count, 2)
        assert.deepStrictEqual(lines.filter((line) => line.includes("too_many_pings")), [
          "the master ended the connection with GOAWAY too_many_pings: it refuses pings every 300ms; the next connections ping every 600ms",
          "the master ended the connection with GOAWAY too_many_pings: it refuses pings every 600ms; the next connections ping every 1s 200ms"
        ])
      }).pipe(Effect.provide(GrpcChannel.layer)),
    40_000
  )
})
