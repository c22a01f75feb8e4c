/**
 * The embedded master as a process, for the demo, the end-to-end tests and a
 * worker to talk to by hand. Configured from the environment:
 *
 *   MASTER_PORT  the gRPC port (default 9666)
 *   MASTER_HOST  the address to bind (default 127.0.0.1)
 *   ADMIN_PORT   an HTTP port to drive it (default 9667)
 *   ADMIN_SOCKET a Unix socket path for the admin API instead of ADMIN_PORT (it
 *                crosses network namespaces, which the end-to-end tests use)
 *   MASTER_REDELIVER_AFTER, MASTER_MAX_HAND_OUTS  see `Master.Options` (defaults 10 seconds, 5)
 *
 * The admin API, JSON over HTTP on 127.0.0.1:
 *   POST /tasks      {"payload": {...}, "priority"?: n}  -> {"id": "task-1"}
 *   GET  /tasks                                          -> every task, with its status history
 *   GET  /nodes                                          -> every node
 *   POST /stop, POST /restart, POST /serving {"serving": bool}, POST /failure-rate {"rate": 0.3}
 *   POST /report-failure-rate {"rate": 1}  fail only this share of ReportStatus calls (UNAVAILABLE)
 *
 * Run it with `npm run master`.
 */
import * as grpc from "@grpc/grpc-js"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import { createServer } from "node:http"
import { Master } from "../src/testing/index.js"
import { Logging } from "./logging.js"

const Enqueue = Schema.Struct({
  payload: Schema.Unknown,
  priority: Schema.optional(Schema.Int),
  node: Schema.optional(Schema.String)
})

// ReportStatus alone fails at this rate: workers fetch and run tasks, and their reports wait in their outboxes.
let reportFailureRate = 0
const failReports: grpc.ServerInterceptor = (method, call) =>
  new grpc.ServerInterceptingCall(call, {
    start: (next) =>
      next({
        onReceiveMetadata: (metadata, pass) =>
          method.path.endsWith("/ReportStatus") && Math.random() < reportFailureRate
            ? call.sendStatus({ code: grpc.status.UNAVAILABLE, details: "ReportStatus failed on purpose" })
            : pass(metadata)
      })
  })

const admin = HttpRouter.empty.pipe(
  HttpRouter.post(
    "/tasks",
    Effect.gen(function*() {
      const master = yield* Master.Master
      const body = yield* HttpServerRequest.schemaBodyJson(Enqueue)
      const id = yield* master.enqueue({ ...body, payload: JSON.stringify(body.payload) })
      return yield* HttpServerResponse.json({ id })
    })
  ),
  HttpRouter.get("/tasks", Effect.flatMap(Master.Master, (master) => Effect.flatMap(master.tasks, (tasks) => HttpServerResponse.json(tasks)))),
  HttpRouter.get("/nodes", Effect.flatMap(Master.Master, (master) => Effect.flatMap(master.nodes, (nodes) => HttpServerResponse.json(nodes)))),
  HttpRouter.post("/stop", Effect.flatMap(Master.Master, (master) => Effect.as(master.stop, HttpServerResponse.empty()))),
  HttpRouter.post("/restart", Effect.flatMap(Master.Master, (master) => Effect.as(master.restart, HttpServerResponse.empty()))),
  HttpRouter.post(
    "/serving",
    Effect.gen(function*() {
      const { serving } = yield* HttpServerRequest.schemaBodyJson(Schema.Struct({ serving: Schema.Boolean }))
      yield* (yield* Master.Master).setServing(serving)
      return HttpServerResponse.empty()
    })
  ),
  HttpRouter.post(
    "/failure-rate",
    Effect.gen(function*() {
      const { rate } = yield* HttpServerRequest.schemaBodyJson(Schema.Struct({ rate: Schema.Number }))
      yield* (yield* Master.Master).setFailureRate(rate)
      return HttpServerResponse.empty()
    })
  ),
  HttpRouter.post(
    "/report-failure-rate",
    Effect.gen(function*() {
      const { rate } = yield* HttpServerRequest.schemaBodyJson(Schema.Struct({ rate: Schema.Number.pipe(Schema.between(0, 1)) }))
      reportFailureRate = rate
      return HttpServerResponse.empty()
    })
  )
)

const MasterLive = Layer.unwrapEffect(
  Effect.gen(function*() {
    const port = yield* Config.port("MASTER_PORT").pipe(Config.withDefault(9666))
    const host = yield* Config.string("MASTER_HOST").pipe(Config.withDefault("127.0.0.1"))
    const adminPort = yield* Config.port("ADMIN_PORT").pipe(Config.withDefault(9667))
    const adminSocket = yield* Config.option(Config.string("ADMIN_SOCKET"))
    const redeliverAfter = yield* Config.option(Config.duration("MASTER_REDELIVER_AFTER"))
    const maxHandOuts = yield* Config.option(Config.integer("MASTER_MAX_HAND_OUTS"))
    const MasterLayer = Master.layer({
      port,
      host,
      serverOptions: { interceptors: [failReports] },
      ...(redeliverAfter._tag === "Some" ? { redeliverAfter: redeliverAfter.value } : {}),
      ...(maxHandOuts._tag === "Some" ? { maxHandOuts: maxHandOuts.value } : {})
    })
    const listen = adminSocket._tag === "Some" ? { path: adminSocket.value } : { port: adminPort, host: "127.0.0.1" }
    const Admin = HttpServer.serve(admin).pipe(Layer.provide(NodeHttpServer.layer(createServer, listen)))
    const where = adminSocket._tag === "Some" ? `unix:${adminSocket.value}` : `http://127.0.0.1:${adminPort}`
    const announce = Layer.effectDiscard(
      Effect.flatMap(Master.Master, (master) => Effect.logInfo(`master serving on ${master.address}, admin on ${where}`))
    )
    return Layer.mergeAll(Admin, announce).pipe(Layer.provideMerge(MasterLayer))
  })
)

Layer.launch(MasterLive).pipe(Effect.provide(Logging), NodeRuntime.runMain({ disablePrettyLogger: true }))
