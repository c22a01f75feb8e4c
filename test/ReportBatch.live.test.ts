/**
 * Several reports in one call over the real protocol: `TaskSource.reportAll`
 * against the embedded master's ReportStatuses (each report its own result),
 * and against a master without it (UNIMPLEMENTED: one report a call, from then
 * on).
 */
import { assert, describe, it } from "@effect/vitest"
import * as grpc from "@grpc/grpc-js"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as GrpcChannel from "../src/GrpcChannel.js"
import * as TaskSource from "../src/TaskSource.js"
import * as Master from "../src/testing/Master.js"
import { MasterLink } from "./fixtures/masterLink.js"

// Counts the calls of each method the master receives; answers UNIMPLEMENTED for those in `unimplemented`.
const counting = (unimplemented: ReadonlySet<string>) => {
  const calls = new Map<string, number>()
  const interceptor: grpc.ServerInterceptor = (method, call) =>
    new grpc.ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMetadata: (metadata, pass) => {
            const name = method.path.split("/").at(-1) ?? method.path
            calls.set(name, (calls.get(name) ?? 0) + 1)
            return unimplemented.has(name)
              ? call.sendStatus({ code: grpc.status.UNIMPLEMENTED, details: `${name} is not implemented` })
              : pass(metadata)
          }
        })
    })
  return { calls, interceptor }
}

const sourceFor = (address: string) =>
  Effect.flatMap(
    Layer.build(
      TaskSource.layer({ connection: MasterLink, nodeKey: "batch" }).pipe(
        Layer.provideMerge(MasterLink.layer({ address })),
        Layer.provide(GrpcChannel.layer)
      )
    ),
    (context) => Effect.succeed(Context.get(context, TaskSource.TaskSource))
  )

// Two tasks handed out to the node, and a report of each and of a task the master never had.
const handedOut = (master: Master.Master, source: TaskSource.TaskSource) =>
  Effect.gen(function*() {
    yield* source.register(1)
    const a = yield* master.enqueue({ payload: "{}" })
    const b = yield* master.enqueue({ payload: "{}" })
    const fetched = yield* source.fetch({ wait: Duration.zero, max: 2, running: 0 })
    assert.deepStrictEqual(fetched.tasks.map((t) => t.id).sort(), [a, b].sort())
    const report = (taskId: string, status: TaskSource.ReportedStatus): TaskSource.StatusReport => ({
      key: `${taskId}:${status}`,
      taskId,
      status,
      error: ""
    })
    return { a, b, report }
  })

describe("TaskSource.reportAll (live)", () => {
  it.scopedLive("one call for several reports; a report refused in the middle is its own result, the others taken", () =>
    Effect.gen(function*() {
      const { calls, interceptor } = counting(new Set())
      const master = yield* Master.make({ serverOptions: { interceptors: [interceptor] } })
      const source = yield* sourceFor(master.address)
      const { a, b, report } = yield* handedOut(master, source)
      const results = yield* source.reportAll!([
        report(a, "RUNNING"),
        report("no-such-task", "RUNNING"),
        report(b, "RUNNING")
      ])
      assert.strictEqual(results.length, 3)
      assert.isTrue(Either.isRight(results[0]!))
      assert.isTrue(Either.isRight(results[2]!))
      const refused = results[1]!
      assert.isTrue(
        Either.isLeft(refused) && refused.left._tag === "GrpcError" && refused.left.code === grpc.status.NOT_FOUND
      )
      assert.strictEqual((yield* master.task(a)).status, "RUNNING")
      assert.strictEqual((yield* master.task(b)).status, "RUNNING")
      assert.strictEqual(calls.get("ReportStatuses"), 1)
      assert.strictEqual(calls.get("ReportStatus"), undefined)
    }))

  it.scopedLive("a master without ReportStatuses: reports go one a call, and ReportStatuses is not tried again", () =>
    Effect.gen(function*() {
      const { calls, interceptor } = counting(new Set(["ReportStatuses"]))
      const master = yield* Master.make({ serverOptions: { interceptors: [interceptor] } })
      const source = yield* sourceFor(master.address)
      const { a, b, report } = yield* handedOut(master, source)
      const first = yield* source.reportAll!([
        report(a, "RUNNING"),
        report("no-such-task", "RUNNING"),
        report(b, "RUNNING")
      ])
      assert.deepStrictEqual(first.map(Either.isRight), [true, false, true])
      const second = yield* source.reportAll!([report(a, "FINISHED"), report(b, "FINISHED")])
      assert.deepStrictEqual(second.map(Either.isRight), [true, true])
      assert.strictEqual((yield* master.task(a)).status, "FINISHED")
      assert.strictEqual((yield* master.task(b)).status, "FINISHED")
      assert.strictEqual(calls.get("ReportStatuses"), 1)
      assert.strictEqual(calls.get("ReportStatus"), 5)
    }))
})
