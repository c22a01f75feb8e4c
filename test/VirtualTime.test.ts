import { assert, describe, it } from "@effect/vitest"
import * as grpc from "@grpc/grpc-js"
import * as Chunk from "effect/Chunk"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import * as Random from "effect/Random"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as TestClock from "effect/TestClock"
import * as Connection from "../src/Connection.js"
import { ConnectError } from "../src/ConnectionState.js"
import * as GrpcChannel from "../src/GrpcChannel.js"
import * as Supervisor from "../src/internal/connection/supervisor.js"
import * as Timeout from "../src/internal/shared/timeout.js"
import * as Outbox from "../src/Outbox.js"
import * as Readiness from "../src/Readiness.js"
import * as Retry from "../src/Retry.js"
import * as TaskHandler from "../src/TaskHandler.js"
import * as SimulatedMaster from "../src/testing/SimulatedMaster.js"
import * as SimulatedNetwork from "../src/testing/SimulatedNetwork.js"
import { withCountingClock } from "./fixtures/countingClock.js"
import { EchoClient } from "./fixtures/echo.js"
import { MasterLink } from "./fixtures/masterLink.js"

const outage = Duration.toMillis(Duration.minutes(60))

// The attempts the default reconnect schedule makes in `outage` of a cut link (host unreachable, a cheap failure,
// which the simulated network answers at once: its default refusal latency is 0) with every delay jittered to its
// shortest (`random` 0: the most attempts, 298 in an hour) or to its longest (`random` 1: the fewest, 200).
const attemptsIn = (outage: number, random: 0 | 1) =>
  Effect.gen(function*() {
    const error = new ConnectError({ reason: "HostUnreachable", message: "simulated" })
    let state = Retry.reconnect.initial
    let now = 0
    let attempts = 0
    while (now < outage) {
      attempts++
      const [next, delay] = yield* Retry.reconnect.step(now, error, state)
      state = next
      now += Duration.toMillis(delay)
    }
    return attempts
  }).pipe(Effect.withRandom(Random.fixed([random])))

// A connection over a fresh simulated network, in a scope of its own.
const connection = Effect.gen(function*() {
  const [network, dialer] = yield* SimulatedNetwork.make()
  const scope = yield* Scope.make()
  const conn = yield* Connection.make({
    address: "master:9666",
    services: { echo: EchoClient },
    readiness: { probe: SimulatedNetwork.probe }
  }).pipe(
    Effect.provideService(GrpcChannel.Dialer, dialer),
    Effect.provideService(SimulatedNetwork.SimulatedNetwork, network),
    Scope.extend(scope)
  )
  return { network, conn, scope }
})

const quiet = Logger.withMinimumLogLevel(LogLevel.None)

// The longest the default schedule waits after a cheap failure `outage` into an outage, jittered at its longest,
// and a few seconds for the attempt itself (the simulated connect, readiness, a registration).
const nextAttemptWithin = (outage: number) =>
  Duration.millis(
    Math.min(Duration.toMillis(Retry.reconnectDefaults.soonCap), Retry.reconnectDefaults.soonFraction * outage) *
        Retry.reconnectDefaults.jitter.max + 5_000
  )

describe("Virtual time: what wakes the clock", () => {
  it.effect(
    "a 60-minute outage wakes the clock once per reconnect attempt, and for nothing else",
    () =>
      withCountingClock((wakeups) =>
        Effect.gen(function*() {
          const most = yield* attemptsIn(outage, 0)
          const fewest = yield* attemptsIn(outage, 1)
          const { conn, network } = yield* connection
          yield* TestClock.adjust("1 second")
          assert.strictEqual((yield* conn.state)._tag, "Ready")
          yield* network.cut
          yield* wakeups.reset
          const dialed = yield* network.dials
          yield* TestClock.adjust(outage)
          const count = yield* wakeups.count
          const attempts = (yield* network.dials) - dialed
          // The schedule, not the network, spaced the attempts: as many as its jitter allows, no more, no fewer.
          assert.isAtLeast(attempts, fewest)
          assert.isAtMost(attempts, most)
          // Each attempt is refused at once and wakes the clock once: for the schedule's delay after it (the last
          // attempt's too: scheduled in the outage, due after it). Nothing else in the connection may wake.
          assert.isAtMost(
            count,
            attempts,
            `wake-ups in a 60-minute outage of ${attempts} attempts: ${JSON.stringify([...yield* wakeups.byCaller])}`
          )
          // An hour in, the next attempt is up to 3 % of the hour (108 s, jittered up to 130 s) away.
          yield* network.restore
          yield* TestClock.adjust(nextAttemptWithin(outage))
          assert.strictEqual((yield* conn.state)._tag, "Ready")
        })
      ).pipe(Effect.withRandom(Random.make(1)), quiet),
    // About 240 TestClock steps: a second or two alone, much longer beside the whole suite on a small machine.
    300_000
  )

  it.effect("Ready and idle for 60 minutes, the clock wakes for the probe only", () =>
    withCountingClock((wakeups) =>
      Effect.gen(function*() {
        const probes = outage / Duration.toMillis(Readiness.defaults.probeInterval)
        const { conn } = yield* connection
        yield* TestClock.adjust("1 second")
        yield* wakeups.reset
        yield* TestClock.adjust(outage)
        assert.strictEqual((yield* conn.state)._tag, "Ready")
        // One wake-up a probe interval, for the probe: answered at once, it leaves no timeout behind.
        assert.isAtMost(yield* wakeups.count, probes + 2, JSON.stringify([...yield* wakeups.byCaller]))
      })
    ).pipe(quiet))
})

describe("Virtual time: a whole worker", () => {
  // A task handler, its connection, a simulated network and master: what a user's worker test builds.
  const worker = TaskHandler.layer({ connection: MasterLink, payload: Schema.Unknown, run: () => Effect.void }).pipe(
    Layer.provideMerge(SimulatedMaster.taskSource({ connection: MasterLink, nodeKey: "w1" })),
    Layer.provideMerge(
      MasterLink.layer({
        address: "master:9666",
        readiness: { probe: SimulatedNetwork.probe }
      })
    ),
    Layer.provideMerge(Layer.mergeAll(SimulatedNetwork.layer(), SimulatedMaster.layer(), Outbox.layerMemory))
  )

  it.effect(
    "a 60-minute outage: the task handler adds nothing to the connection's wake-ups but the outage's edges",
    () =>
      withCountingClock((wakeups) =>
        Effect.gen(function*() {
          const most = yield* attemptsIn(outage, 0)
          const scope = yield* Scope.make()
          const context = yield* Layer.buildWithScope(worker, scope)
          const network = yield* Effect.provide(SimulatedNetwork.SimulatedNetwork, context)
          const conn = yield* Effect.provide(MasterLink, context)
          yield* TestClock.adjust("6 seconds")
          assert.isTrue((yield* conn.readiness.status).ready)
          yield* network.cut
          yield* wakeups.reset
          const dialed = yield* network.dials
          yield* TestClock.adjust(outage)
          const count = yield* wakeups.count
          const attempts = (yield* network.dials) - dialed
          assert.isAtMost(attempts, most)
          // The connection's bound, and one more: the task handler's fetch, heartbeat and membership loops wait on
          // the connection's transitions (one an outage), so the only wake-up of theirs is the membership's delay
          // before it registers again, as the outage begins and its subscription ends.
          assert.isAtMost(count, attempts + 1, `wake-ups: ${JSON.stringify([...yield* wakeups.byCaller])}`)
          // An hour in, the next attempt is up to 3 % of the hour (108 s, jittered up to 130 s) away.
          yield* network.restore
          yield* TestClock.adjust(nextAttemptWithin(outage))
          assert.isTrue((yield* conn.readiness.status).ready)
          yield* Scope.close(scope, Exit.void)
        })
      ).pipe(Effect.withRandom(Random.make(1)), quiet),
    300_000
  )
})

describe("Virtual time: a lookup waiting through an outage", () => {
  it.effect("arms one timer for its deadline, whatever the attempts, and fails naming the last state", () =>
    withCountingClock((wakeups) =>
      Effect.gen(function*() {
        const { conn, network } = yield* connection
        yield* TestClock.adjust("1 second")
        yield* network.cut
        yield* TestClock.adjust("1 second")
        yield* wakeups.reset
        const lookup = yield* Effect.fork(Effect.either(conn.client("echo")))
        yield* TestClock.adjust("89 seconds")
        const byCaller = [...yield* wakeups.byCaller]
        // The supervisor's are the attempts; the rest are the lookup's.
        const lookups = byCaller.filter(([caller]) => !caller.startsWith("Connection/supervisor"))
        assert.deepStrictEqual(lookups, [["unnamed 90000ms", 1]])
        yield* TestClock.adjust("1 second")
        const failed = yield* Fiber.join(lookup)
        assert.strictEqual(failed._tag, "Left")
        if (failed._tag === "Left") {
          assert.strictEqual(failed.left.reason, "Timeout")
          assert.strictEqual(failed.left.state._tag, "Reconnecting")
          assert.isAbove((failed.left.state as { readonly attempt: number }).attempt, 20)
        }
      })
    ).pipe(Effect.withRandom(Random.make(1)), quiet))
})

describe("Virtual time: the probe while Ready", () => {
  // A supervisor over the simulated network whose probe counts its runs.
  const probed = Effect.gen(function*() {
    const [network, dialer] = yield* SimulatedNetwork.make()
    let probes = 0
    const probe: Readiness.Probe = (target) =>
      Effect.zipRight(
        Effect.sync(() => probes++),
        Effect.provideService(SimulatedNetwork.probe(target), SimulatedNetwork.SimulatedNetwork, network)
      )
    const started = yield* Supervisor.start({
      address: "master:9666",
      services: { echo: EchoClient },
      credentials: grpc.credentials.createInsecure(),
      channelOptions: {},
      connectTimeout: Connection.defaults.connectTimeout,
      readiness: { ...Readiness.defaults },
      probe,
      reconnectSchedule: Connection.defaults.reconnectSchedule,
      rejectedSchedule: Connection.defaults.rejectedSchedule
    }).pipe(Effect.provideService(GrpcChannel.Dialer, dialer))
    return { supervisor: started, probes: Effect.sync(() => probes) }
  })

  it.scoped("a call answered within the probe interval puts the next probe off to an interval after it", () =>
    Effect.gen(function*() {
      const { probes, supervisor } = yield* probed
      yield* TestClock.adjust("50 millis")
      assert.strictEqual(yield* probes, 1, "readiness probed once")
      yield* TestClock.adjust("20 seconds")
      yield* supervisor.answered(1)
      // 30 s after Ready: the answer at 20 s proved the link.
      yield* TestClock.adjust("10 seconds")
      assert.strictEqual(yield* probes, 1)
      // 30 s after the answer: probed.
      yield* TestClock.adjust("20 seconds")
      assert.strictEqual(yield* probes, 2)
      // An answer on another generation's link proves nothing about this one.
      yield* supervisor.answered(2)
      yield* TestClock.adjust("30 seconds")
      assert.strictEqual(yield* probes, 3)
    }).pipe(quiet))

  it.scoped("a check asked for probes at once, answered call or not", () =>
    Effect.gen(function*() {
      const { probes, supervisor } = yield* probed
      yield* TestClock.adjust("50 millis")
      yield* supervisor.answered(1)
      yield* supervisor.check
      yield* TestClock.adjust("1 millis")
      assert.strictEqual(yield* probes, 2)
    }).pipe(quiet))
})

describe("Virtual time: a deadline for a check answered at once", () => {
  it.effect("arms no timer when the check needs no waiting; times out, and interrupts, one that waits", () =>
    Effect.gen(function*() {
      // At once: the answer, and no sleep left on the clock.
      assert.deepStrictEqual(yield* Timeout.timeoutOption(Effect.succeed(1), "2 seconds"), Option.some(1))
      // Inside another one, as a readiness round's probe is inside the readiness bound.
      const nested = Timeout.timeoutOption(Timeout.timeoutOption(Effect.succeed(2), "2 seconds"), "30 seconds")
      assert.deepStrictEqual(yield* nested, Option.some(Option.some(2)))
      assert.strictEqual(Chunk.size(yield* TestClock.sleeps()), 0)
      // A failure at once is the failure.
      assert.deepStrictEqual(yield* Effect.flip(Timeout.timeoutOption(Effect.fail("no"), "2 seconds")), "no")
      // One that waits: the whole duration from the start, then nothing, and the check is interrupted.
      let interrupted = false
      const slow = Effect.sleep("5 seconds").pipe(Effect.onInterrupt(() => Effect.sync(() => (interrupted = true))))
      const fiber = yield* Effect.fork(Timeout.timeoutOption(slow, "2 seconds"))
      yield* TestClock.adjust("1999 millis")
      assert.isNull(fiber.unsafePoll())
      yield* TestClock.adjust("1 millis")
      assert.deepStrictEqual(yield* Fiber.join(fiber), Option.none())
      assert.isTrue(interrupted)
    }))
})
