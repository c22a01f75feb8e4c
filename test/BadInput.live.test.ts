/**
 * Bad input from the network: an oversized message, and a master that sends
 * garbage on the subscription stream. Each gives a clear error, and the worker
 * keeps running its tasks.
 */
import { assert, describe, it } from "@effect/vitest"
import * as grpc from "@grpc/grpc-js"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Schema from "effect/Schema"
import * as Env from "../src/Env.js"
import * as GrpcChannel from "../src/GrpcChannel.js"
import * as Outbox from "../src/Outbox.js"
import * as TaskHandler from "../src/TaskHandler.js"
import * as TaskSource from "../src/TaskSource.js"
import * as Master from "../src/testing/Master.js"
import * as WorkerProtocol from "../src/WorkerProtocol.js"
import { MasterLink } from "./fixtures/masterLink.js"
import { eventually } from "./fixtures/poll.js"
import { serve } from "./fixtures/server.js"

const Payload = Schema.Struct({ text: Schema.String })

const captured = () => {
  const lines: Array<string> = []
  const logger = Logger.make(({ message }) =>
    void lines.push(Array.isArray(message) ? message.join(" ") : String(message))
  )
  return { lines, layer: Logger.replace(Logger.defaultLogger, logger) }
}

const worker = (connection: Layer.Layer<MasterLink, unknown, GrpcChannel.Dialer>) =>
  TaskHandler.layer({ connection: MasterLink, payload: Payload, run: () => Effect.void }).pipe(
    Layer.provide(TaskSource.layer({ connection: MasterLink, nodeKey: "w1" })),
    Layer.provide(connection),
    Layer.provide(GrpcChannel.layer),
    Layer.provide(Outbox.layerMemory)
  )

describe("bad input from the network", () => {
  it.scopedLive(
    "an oversized task: RESOURCE_EXHAUSTED named in the log, the next task runs, the big one ends ERROR",
    () =>
      Effect.gen(function*() {
        const logs = captured()
        // Unconfirmed hand-outs go out again after 200 ms; the third is the last.
        const master = yield* Master.make({ redeliverAfter: "200 millis", maxHandOuts: 3 })
        const huge = yield* master.enqueue({ payload: JSON.stringify({ text: "x".repeat(64 * 1024) }), priority: 1 })
        const small = yield* master.enqueue({ payload: JSON.stringify({ text: "ok" }) })
        // The limit as an operator sets it: MAX_MESSAGE_BYTES.
        const connection = MasterLink.layerConfig().pipe(
          Layer.provide(Env.layer({ env: { MASTER_ADDRESS: master.address, MAX_MESSAGE_BYTES: String(16 * 1024) } }))
        )
        yield* Layer.build(worker(connection)).pipe(Effect.provide(logs.layer))
        yield* eventually(master.task(small), (t) => t.status === "FINISHED", "10 seconds", "the small task finished")
        const refusal = logs.lines.find((line) => line.includes("RESOURCE_EXHAUSTED"))
        assert.isDefined(refusal, "the oversized message is named in the log")
        assert.include(refusal!, "larger than max")
        // Nothing is lost silently: the master gives the task up with a reason instead of handing it out forever.
        const given = yield* eventually(
          master.task(huge),
          (t) => t.status === "ERROR",
          "10 seconds",
          "the oversized task ended ERROR"
        )
        // Three hand-outs, each fetched once: a message over the size limit is not transient, so not retried.
        assert.strictEqual(given.handedOut, 3)
        assert.include(given.history.at(-1)?.error ?? "", "never confirmed")
      }),
    20_000
  )

  it.scopedLive(
    "garbage on the subscription stream: a clear error, a rejoin, and the tasks go on",
    () =>
      Effect.gen(function*() {
        const logs = captured()
        const finished: Array<string> = []
        let handedOut = 0
        // A master whose Subscribe writes bytes that are not a MasterMessage.
        const garbled: grpc.ServiceDefinition = {
          ...WorkerProtocol.NodeService,
          Subscribe: { ...WorkerProtocol.NodeService.Subscribe, responseSerialize: (bytes: Buffer) => bytes }
        }
        const { port } = yield* serve((server) => {
          server.addService(garbled, {
            Register: (_call: unknown, callback: grpc.sendUnaryData<object>) => callback(null, {}),
            SendHeartbeat: (_call: unknown, callback: grpc.sendUnaryData<object>) => callback(null, {}),
            Subscribe: (call: grpc.ServerWritableStream<unknown, Buffer>) => {
              call.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x02]))
            }
          })
          server.addService(WorkerProtocol.TaskService, {
            FetchTask: (_call: unknown, callback: grpc.sendUnaryData<WorkerProtocol.FetchTaskReply>) =>
              callback(null, {
                task: handedOut++ < 3
                  ? { id: `t${handedOut}`, payload: JSON.stringify({ text: "go" }), priority: 0, created_at_ms: "0" }
                  : null,
                more_tasks: [],
                waits: false
              }),
            ReportStatus: (
              call: grpc.ServerUnaryCall<WorkerProtocol.ReportStatusRequest, WorkerProtocol.ReportStatusReply>,
              callback: grpc.sendUnaryData<WorkerProtocol.ReportStatusReply>
            ) => {
              if (call.request.status === "FINISHED") finished.push(call.request.task_id)
              callback(null, { outcome: "ACCEPTED" })
            }
          })
        })
        const connection = MasterLink.layer({ address: `127.0.0.1:${port}` })
        yield* Layer.build(worker(connection)).pipe(Effect.provide(logs.layer))
        yield* eventually(Effect.sync(() => finished.length), (n) => n === 3, "10 seconds", "three tasks finished")
        yield* eventually(
          Effect.sync(() => logs.lines.filter((line) => line.includes("the master's stream failed")).length),
          (n) => n >= 2,
          "10 seconds",
          "the garbled stream failed and was rejoined"
        )
        const failed = logs.lines.find((line) => line.includes("the master's stream failed"))!
        assert.include(failed, "node.Subscribe failed with INTERNAL")
      }),
    20_000
  )
})
