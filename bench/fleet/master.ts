/**
 * The fleet benchmark's master: the embedded master (`Master.make`) alone in
 * its own process, as a user's master runs. It counts the TCP connections its
 * own HTTP/2 server accepts (the attempts it sees, stamped), reports its CPU
 * time, and can be made busy: a share of each 10 ms spent on other work, a
 * master whose CPU is limited.
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Scope from "effect/Scope"
import http2 from "node:http2"
import { cpuMs, now, serve } from "../child.js"

// Every connection the master's HTTP/2 servers accept, stamped: grpc-js makes its servers with these two.
const accepted: Array<number> = []
const count = <S extends { on: (event: "connection", listener: () => void) => unknown }>(server: S): S => {
  server.on("connection", () => void accepted.push(now()))
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

const { make } = await import("../../src/testing/Master.js")
const scope = Effect.runSync(Scope.make())
const master = await Effect.runPromise(
  make({ heartbeatInterval: "1 hour" }).pipe(Scope.extend(scope), Logger.withMinimumLogLevel(LogLevel.None))
)
const run = <A>(effect: Effect.Effect<A, unknown>) =>
  Effect.runPromise(effect.pipe(Logger.withMinimumLogLevel(LogLevel.None)))

serve(async (request) => {
  switch (request["cmd"]) {
    case "port":
      return { port: master.port }
    case "enqueue": {
      for (const node of request["nodes"] as ReadonlyArray<string>) await run(master.enqueue({ payload: "{}", node }))
      return {}
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
      return { at: now(), cpuMs: cpuMs(), accepted: accepted.length }
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
