/**
 * Call overhead: unary calls through `conn.call` (lookup, breaker, retry
 * policy, deadline, cancellation) against raw grpc-js calls on the same
 * loopback server and the same channel options, at concurrency 1 and 64.
 * Rounds alternate raw and wrapped so both see the same machine.
 */
import * as grpc from "@grpc/grpc-js"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Connection from "../src/Connection.js"
import * as GrpcChannel from "../src/GrpcChannel.js"
import { addEcho, EchoClient, type SayReply } from "../test/fixtures/echo.js"
import { serve } from "../test/fixtures/server.js"
import type { Bench, Result } from "./Bench.js"
import { bars, percentile } from "./plot.js"

class Echo extends Connection.Tag("bench/Echo", { echo: EchoClient })<Echo>() {}

const rawCall = (client: EchoClient, text: string) =>
  new Promise<SayReply>((resolve, reject) =>
    client.say(
      { text },
      new grpc.Metadata(),
      { deadline: Date.now() + 10_000 },
      (error, reply) => error ? reject(error) : resolve(reply!)
    )
  )

// `calls` calls spread over `concurrency` loops; returns the wall time and each call's latency (ms).
const timedRaw = async (calls: number, concurrency: number, one: () => Promise<unknown>) => {
  const latencies: Array<number> = []
  const perLoop = Math.ceil(calls / concurrency)
  const start = performance.now()
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let i = 0; i < perLoop; i++) {
        const t = performance.now()
        await one()
        latencies.push(performance.now() - t)
      }
    })
  )
  return { wall: performance.now() - start, latencies, calls: perLoop * concurrency }
}

// The same, from inside an Effect program: how a worker built on the library makes its calls.
const timedEffect = (calls: number, concurrency: number, one: Effect.Effect<unknown, unknown>) =>
  Effect.suspend(() => {
    const latencies: Array<number> = []
    const perLoop = Math.ceil(calls / concurrency)
    const start = performance.now()
    const loop = Effect.suspend(() => {
      const t = performance.now()
      return Effect.map(one, () => void latencies.push(performance.now() - t))
    }).pipe(Effect.repeatN(perLoop - 1))
    return Effect.map(
      Effect.all(Array.from({ length: concurrency }, () => loop), { concurrency: "unbounded", discard: true }),
      () => ({ wall: performance.now() - start, latencies, calls: perLoop * concurrency })
    )
  })

type Summary = ReturnType<typeof summarize>

interface Measure {
  readonly concurrency: number
  /** Raw grpc-js from plain Promise loops: context, what the Effect runtime itself costs. */
  readonly promise: Summary
  /** Raw grpc-js in the same Effect loop (`Effect.async` around the call): the baseline. */
  readonly raw: Summary
  readonly wrapped: Summary
}

const summarize = (run: { wall: number; latencies: Array<number>; calls: number }) => ({
  wall: run.wall,
  p50: percentile(run.latencies, 50),
  mean: run.latencies.reduce((a, b) => a + b, 0) / run.latencies.length,
  throughput: (run.calls / run.wall) * 1000
})

const median = <A>(values: ReadonlyArray<A>, by: (a: A) => number): A =>
  [...values].sort((a, b) => by(a) - by(b))[Math.floor(values.length / 2)]!

export const overhead: Bench = ({ quick }) =>
  Effect.gen(function*() {
    const calls = quick ? 2_000 : 20_000
    const rounds = quick ? 1 : 5
    const { port } = yield* serve(addEcho)
    const address = `127.0.0.1:${port}`
    // The raw client gets the very channel options the connection uses: only the wrapper differs.
    const rawClient = new EchoClient(address, grpc.credentials.createInsecure(), GrpcChannel.defaultChannelOptions)
    yield* Effect.addFinalizer(() => Effect.sync(() => rawClient.close()))
    const context = yield* Layer.build(
      Echo.layer({ address }).pipe(Layer.provide(GrpcChannel.layer))
    )
    const conn = yield* Effect.provide(Echo, context)
    yield* conn.readiness.await
    const wrappedCall = (text: string) => conn.call("echo", "say", { text })
    // What one writes by hand in an Effect worker: the call, its deadline, interruption cancels it.
    const rawEffect = (text: string) =>
      Effect.async<SayReply, grpc.ServiceError>((resume) => {
        const call = rawClient.say(
          { text },
          new grpc.Metadata(),
          { deadline: Date.now() + 10_000 },
          (error, reply) => resume(error ? Effect.fail(error) : Effect.succeed(reply!))
        )
        return Effect.sync(() => call.cancel())
      })

    const measures: Array<Measure> = []
    for (const concurrency of [1, 64]) {
      // Warm every path up before measuring.
      yield* Effect.promise(() => timedRaw(1_000, concurrency, () => rawCall(rawClient, "warm")))
      yield* timedEffect(1_000, concurrency, rawEffect("warm"))
      yield* timedEffect(1_000, concurrency, wrappedCall("warm"))
      const promises: Array<Summary> = []
      const raws: Array<Summary> = []
      const wrappeds: Array<Summary> = []
      for (let round = 0; round < rounds; round++) {
        promises.push(
          summarize(yield* Effect.promise(() => timedRaw(calls, concurrency, () => rawCall(rawClient, "x"))))
        )
        raws.push(summarize(yield* timedEffect(calls, concurrency, rawEffect("x"))))
        wrappeds.push(summarize(yield* timedEffect(calls, concurrency, wrappedCall("x"))))
      }
      measures.push({
        concurrency,
        promise: median(promises, (r) => r.wall),
        raw: median(raws, (r) => r.wall),
        wrapped: median(wrappeds, (r) => r.wall)
      })
    }

    const ms = (v: number) => `${v.toFixed(3)} ms`
    const pct = (v: number) => `${(v * 100).toFixed(1)} %`
    const at1 = measures.find((m) => m.concurrency === 1)!
    const at64 = measures.find((m) => m.concurrency === 64)!
    const addedLatency = at1.wrapped.mean / at1.raw.mean - 1
    const lostThroughput = 1 - at64.wrapped.throughput / at64.raw.throughput

    const result: Result = {
      name: "overhead",
      title: "Call overhead: conn.call against raw grpc-js",
      method: `${calls} unary calls per round on one loopback server, at concurrency 1 and 64, ${rounds} interleaved ` +
        "round(s) of each path (the median round by wall time is kept), after 1,000 warm-up calls each. The baseline is " +
        "raw grpc-js in the same Effect loop (the call in Effect.async, as one writes it by hand in an Effect worker) on a " +
        "client with the connection's own channel options; raw grpc-js from a plain Promise loop is shown for context " +
        "(the difference is the Effect runtime's own cost, which this library does not add to).",
      tables: [{
        title: "Latency and throughput",
        columns: ["concurrency", "path", "mean", "p50", "calls/s", "mean vs raw in Effect"],
        rows: measures.flatMap((m) =>
          ([["raw grpc-js, Promise loop", m.promise], ["raw grpc-js in Effect", m.raw], [
            "conn.call",
            m.wrapped
          ]] as const).map((
            [path, r]
          ) => [m.concurrency, path, ms(r.mean), ms(r.p50), Math.round(r.throughput), pct(r.mean / m.raw.mean - 1)])
        )
      }],
      targets: [
        {
          name: "added latency at concurrency 1",
          target: "<= 10 %",
          measured: pct(addedLatency),
          met: addedLatency <= 0.10
        },
        {
          name: "throughput lost at concurrency 64",
          target: "<= 5 %",
          measured: pct(lostThroughput),
          met: lostThroughput <= 0.05
        }
      ],
      svg: bars({
        title: "Call overhead: conn.call against raw grpc-js",
        subtitle: `${calls} calls per round, loopback; mean latency at concurrency 1 and 64`,
        unit: "mean latency (ms)",
        groups: measures.map((m) => ({
          label: `concurrency ${m.concurrency}`,
          bars: [
            { series: "raw grpc-js, Promise loop", value: m.promise.mean },
            { series: "raw grpc-js in Effect", value: m.raw.mean },
            { series: "conn.call", value: m.wrapped.mean }
          ]
        }))
      }),
      data: { calls, rounds, measures }
    }
    return result
  }).pipe(Effect.scoped, Logger.withMinimumLogLevel(LogLevel.Error))
