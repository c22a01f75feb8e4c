/**
 * The throughput benchmark's master: the embedded master (`Master.make`)
 * alone in its own process, as a user's master runs, with its CPU time.
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Scope from "effect/Scope"
import { cpuMs, now, serve } from "../child.js"

const { make } = await import("../../src/testing/Master.js")
const scope = Effect.runSync(Scope.make())
const run = <A>(effect: Effect.Effect<A, unknown>) =>
  Effect.runPromise(effect.pipe(Logger.withMinimumLogLevel(LogLevel.None)))
const master = await run(make({ heartbeatInterval: "1 hour" }).pipe(Scope.extend(scope)))

serve(async (request) => {
  switch (request["cmd"]) {
    case "port":
      return { port: master.port }
    case "enqueue": {
      const count = request["count"] as number
      await run(Effect.forEach(Array.from({ length: count }), () => master.enqueue({ payload: "{}" }), {
        discard: true
      }))
      return {}
    }
    case "mark":
      return { at: now(), cpuMs: cpuMs() }
    case "finished": {
      const tasks = await run(master.tasks)
      return {
        finished: tasks.filter((task) => task.status === "FINISHED").length,
        handedOut: tasks.reduce((sum, task) => sum + task.handedOut, 0)
      }
    }
    case "close":
      await Effect.runPromise(Scope.close(scope, Exit.void))
      return {}
    default:
      throw new Error(`unknown request ${String(request["cmd"])}`)
  }
})
