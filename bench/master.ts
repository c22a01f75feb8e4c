/**
 * The master of the dispatch and throughput benchmarks: the embedded master
 * (`Master.make`) alone in its own process, as a user's master runs. It counts
 * every call it receives, by method (a server interceptor, before any handler),
 * reports its CPU time, queues tasks when asked, and tells each task's story.
 */
import * as grpc from "@grpc/grpc-js"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Scope from "effect/Scope"
import { cpuMs, now, serve } from "./child.js"

const calls: Record<string, number> = {}
const counting: grpc.ServerInterceptor = (method, call) => {
  const name = method.path.slice(method.path.lastIndexOf("/") + 1)
  calls[name] = (calls[name] ?? 0) + 1
  return new grpc.ServerInterceptingCall(call)
}

const { make } = await import("../src/testing/Master.js")
const scope = Effect.runSync(Scope.make())
const master = await Effect.runPromise(
  make({
    serverOptions: { interceptors: [counting] },
    // The Subscribe keepalive's interval, when a round measures the master without it ("0 millis").
    ...(process.env["SUBSCRIBE_KEEPALIVE"]
      ? { subscribeKeepalive: process.env["SUBSCRIBE_KEEPALIVE"] as Duration.DurationInput }
      : {})
  }).pipe(
    Scope.extend(scope),
    Logger.withMinimumLogLevel(LogLevel.None)
  )
)
const run = <A>(effect: Effect.Effect<A, unknown>) =>
  Effect.runPromise(effect.pipe(Logger.withMinimumLogLevel(LogLevel.None)))

serve(async (request) => {
  switch (request["cmd"]) {
    case "port":
      return { port: master.port }
    case "enqueue": {
      const ids: Array<string> = []
      for (let i = 0; i < ((request["count"] as number | undefined) ?? 1); i++) {
        ids.push(await run(master.enqueue({ payload: "{}", node: request["node"] as string | undefined })))
      }
      return { ids }
    }
    // Each task's status, hand-outs, and PENDING and RUNNING times on the master's clock.
    case "tasks": {
      const tasks = await run(master.tasks)
      return {
        tasks: tasks.map((task) => ({
          id: task.id,
          status: task.status,
          handedOut: task.handedOut,
          pending: task.history.find((change) => change.status === "PENDING")?.at,
          running: task.history.find((change) => change.status === "RUNNING")?.at
        }))
      }
    }
    case "mark":
      return { at: now(), cpuMs: cpuMs(), calls: { ...calls } }
    case "close":
      await Effect.runPromise(Scope.close(scope, Exit.void))
      return {}
    default:
      throw new Error(`unknown request ${String(request["cmd"])}`)
  }
})
