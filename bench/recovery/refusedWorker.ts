/**
 * One worker alone in its own process, so its CPU time is its own: this
 * library with its defaults (or the previous reconnect schedule), assembled as
 * the recovery benchmark's contender is, against a master in another process.
 * The benchmark stops that master and reads how much CPU the worker spends
 * retrying while nothing listens.
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import { Connection, Outbox, TaskHandler, TaskSource } from "../../src/index.js"
import { cpuMs, now, serve } from "../child.js"
import { countingDialer } from "../contenders/Library.js"
import { previousReconnect } from "../contenders/previousSchedule.js"

// The connection to the master, declared with the worker protocol's services.
class MasterLink extends Connection.Tag("bench/MasterLink", TaskSource.services)<MasterLink>() {}

let dials = 0
const scope = Effect.runSync(Scope.make())
const quiet = <A, E>(effect: Effect.Effect<A, E>) =>
  Effect.runPromise(effect.pipe(Logger.withMinimumLogLevel(LogLevel.None)))

serve(async (request) => {
  switch (request["cmd"]) {
    case "start": {
      const previous = request["schedule"] === "previous"
      const worker = TaskHandler.layer({ connection: MasterLink, payload: Schema.Unknown, run: () => Effect.void })
        .pipe(
          Layer.provideMerge(TaskSource.layer({ connection: MasterLink, nodeKey: "refused" })),
          Layer.provideMerge(MasterLink.layer({
            address: request["address"] as string,
            ...(previous ? { reconnectSchedule: previousReconnect } : {})
          })),
          Layer.provide(countingDialer(() => dials++)),
          Layer.provide(Outbox.layerMemory)
        )
      await quiet(Effect.gen(function*() {
        const context = yield* Layer.buildWithScope(worker, scope)
        yield* Context.get(context, MasterLink).readiness.await
      }))
      return {}
    }
    case "mark":
      return { at: now(), cpuMs: cpuMs(), dials }
    case "close":
      await quiet(Scope.close(scope, Exit.void))
      return {}
    default:
      throw new Error(`unknown request ${String(request["cmd"])}`)
  }
})
