/**
 * The embedded master's admin API, JSON over HTTP, to drive a master from a
 * test or by hand:
 *
 * - `POST /tasks` `{"payload": {...}, "priority"?: n, "node"?: key}` -> `{"id": "task-<incarnation>-1"}`
 * - `GET /tasks`: every task with its status history; `GET /nodes`: every node
 * - `GET /subscriptions` -> `{"open": n}`: how many `Subscribe` streams are open
 * - `POST /cancel {"id": "..."}` -> `{"outcome": "Notified"}`: `Master.cancel`; the task ends
 *   `CANCELLED` and the newest subscription of its node is told (`NotHandedOut`, `NoSubscription` or
 *   `AlreadyEnded` otherwise); an unknown task is a 404
 * - `POST /stop`, `POST /restart`, `POST /serving {"serving": bool}`
 * - `POST /failure-rate {"rate": 0.3, "only"?: ["ReportStatus"]}`: fail that share of calls (of those methods) with UNAVAILABLE
 * - `POST /forget {"node": key}`: forget the node, as a master that expired it does (`{"forgotten": bool}`)
 *
 * Serve it on any `@effect/platform` HTTP server, with a `Master` in context;
 * the `effect-grpc-resilience-master` command serves it on Node.
 *
 * @since 0.2.0
 */
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Master from "./Master.js"

const Enqueue = Schema.Struct({
  payload: Schema.Unknown,
  priority: Schema.optional(Schema.Int),
  node: Schema.optional(Schema.String)
})

/**
 * The admin API as a router.
 *
 * @since 0.2.0
 * @category routers
 */
export const router = HttpRouter.empty.pipe(
  HttpRouter.post(
    "/tasks",
    Effect.gen(function*() {
      const master = yield* Master.Master
      const body = yield* HttpServerRequest.schemaBodyJson(Enqueue)
      const id = yield* master.enqueue({ ...body, payload: JSON.stringify(body.payload) })
      return yield* HttpServerResponse.json({ id })
    })
  ),
  HttpRouter.get(
    "/tasks",
    Effect.flatMap(Master.Master, (master) => Effect.flatMap(master.tasks, (tasks) => HttpServerResponse.json(tasks)))
  ),
  HttpRouter.get(
    "/nodes",
    Effect.flatMap(Master.Master, (master) => Effect.flatMap(master.nodes, (nodes) => HttpServerResponse.json(nodes)))
  ),
  HttpRouter.get(
    "/subscriptions",
    Effect.flatMap(
      Master.Master,
      (master) => Effect.flatMap(master.subscriptions, (open) => HttpServerResponse.json({ open }))
    )
  ),
  HttpRouter.post(
    "/cancel",
    Effect.gen(function*() {
      const { id } = yield* HttpServerRequest.schemaBodyJson(Schema.Struct({ id: Schema.String }))
      return yield* (yield* Master.Master).cancel(id).pipe(
        Effect.flatMap((outcome) => HttpServerResponse.json({ outcome })),
        Effect.catchTag("MasterError", (error) =>
          error.reason === "UnknownTask"
            ? HttpServerResponse.text(error.message, { status: 404 })
            : Effect.fail(error))
      )
    })
  ),
  HttpRouter.post(
    "/stop",
    Effect.flatMap(Master.Master, (master) => Effect.as(master.stop, HttpServerResponse.empty()))
  ),
  HttpRouter.post(
    "/restart",
    Effect.flatMap(Master.Master, (master) => Effect.as(master.restart, HttpServerResponse.empty()))
  ),
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
      const { only, rate } = yield* HttpServerRequest.schemaBodyJson(
        Schema.Struct({ rate: Schema.Number, only: Schema.optional(Schema.Array(Schema.String)) })
      )
      yield* (yield* Master.Master).setFailureRate(rate, { only })
      return HttpServerResponse.empty()
    })
  ),
  HttpRouter.post(
    "/forget",
    Effect.gen(function*() {
      const { node } = yield* HttpServerRequest.schemaBodyJson(Schema.Struct({ node: Schema.String }))
      const forgotten = yield* (yield* Master.Master).forget(node)
      return yield* HttpServerResponse.json({ forgotten })
    })
  )
)
