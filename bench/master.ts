/**
 * The benchmarks' master: the embedded master (`Master.make`) alone in its own
 * process, as a user's master runs. It counts every call it receives, by method,
 * and every TCP connection its HTTP/2 server accepts (stamped); reports its CPU
 * time; queues tasks when asked and tells each task's story; stops and
 * restarts; and can be made busy: a share of each 10 ms spent on other work, a
 * master whose CPU is limited.
 *
 * Options from the environment: `SUBSCRIBE_KEEPALIVE` (a round that measures the master without the Subscribe
 * keepalive sets "0 millis"), `HEARTBEAT_INTERVAL`.
 */
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Scope from "effect/Scope"
import http2 from "node:http2"
import { cpuMs, now, serve } from "./child.js"

// Every call the master receives, by method, and every TCP connection its HTTP/2 servers accept (stamped),
// counted by the HTTP/2 servers grpc-js makes (it makes them with these two), before grpc-js sees the call: a
// server interceptor would put a layer of its own under every message the master writes. A stream grpc-js then
// refuses (an unknown method) is counted too; these benchmarks make none.
const calls: Record<string, number> = {}
const accepted: Array<number> = []
const count = <S extends http2.Http2Server | http2.Http2SecureServer>(server: S): S => {
  server.on("connection", () => void accepted.push(now()))
  server.on("stream", (_stream, headers) => {
    const path = headers[":path"] ?? ""
    const name = path.slice(path.lastIndexOf("/") + 1)
    calls[name] = (calls[name] ?? 0) + 1
  })
  return server
}
const createServer = http2.createServer
const createSecureServer = http2.createSecureServer
http2.createServer = ((...args: Parameters<typeof createServer>) => count(createServer(...args))) as typeof createServer
http2.createSecureServer =
  ((...args: Parameters<typeof createSecureServer>) => count(createSecureServer(...args))) as typeof createSecureServer

// Other work: `busy` of every 10 ms spent spinning on the master's one thread.
let burner: ReturnType<typeof setInterval> | undefined
const setBusy = (fraction: number) => {
  if (burner !== undefined) clearInterval(burner)
  burner = undefined
  if (fraction <= 0) return
  burner = setInterval(() => {
    const until = performance.now() + 10 * fraction
    while (performance.now() < until) {
      // Spinning.
    }
  }, 10)
}

const option = (name: string) => process.env[name] ? process.env[name] as Duration.DurationInput : undefined
const subscribeKeepalive = option("SUBSCRIBE_KEEPALIVE")
const heartbeatInterval = option("HEARTBEAT_INTERVAL")

const { make } = await import("../src/testing/Master.js")
const scope = Effect.runSync(Scope.make())
const master = await Effect.runPromise(
  make({
    ...(subscribeKeepalive === undefined ? {} : { subscribeKeepalive }),
    ...(heartbeatInterval === undefined ? {} : { heartbeatInterval })
  }).pipe(Scope.extend(scope), Logger.withMinimumLogLevel(LogLevel.None))
)
const run = <A>(effect: Effect.Effect<A, unknown>) =>
  Effect.runPromise(effect.pipe(Logger.withMinimumLogLevel(LogLevel.None)))

serve(async (request) => {
  switch (request["cmd"]) {
    case "port":
      return { port: master.port }
    // `count` tasks for `node` (any node when absent), or one task for each of `nodes`.
    case "enqueue": {
      const nodes = (request["nodes"] as ReadonlyArray<string> | undefined) ??
        Array.from({ length: (request["count"] as number | undefined) ?? 1 }, () => request["node"] as string)
      const ids: Array<string> = []
      for (const node of nodes) ids.push(await run(master.enqueue({ payload: "{}", node })))
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
    case "stop":
      await run(master.stop)
      return { at: now() }
    case "restart":
      await run(master.restart)
      return { at: now() }
    case "busy":
      setBusy(request["fraction"] as number)
      return {}
    case "mark":
      return { at: now(), cpuMs: cpuMs(), calls: { ...calls }, accepted: accepted.length }
    case "accepts": {
      const from = request["from"] as number
      const to = request["to"] as number
      return { at: accepted.filter((at) => at >= from && at <= to) }
    }
    case "close":
      setBusy(0)
      await Effect.runPromise(Scope.close(scope, Exit.void))
      return {}
    default:
      throw new Error(`unknown request ${String(request["cmd"])}`)
  }
})
