import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as HttpServer from "@effect/platform/HttpServer"
import { assert, describe, it } from "@effect/vitest"
import * as grpc from "@grpc/grpc-js"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Random from "effect/Random"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import { service as healthService } from "grpc-health-check"
import { mkdtempSync, rmSync } from "node:fs"
import { createServer } from "node:http"
import { tmpdir } from "node:os"
import { join } from "node:path"
import protobuf from "protobufjs"
import * as ErrorInfo from "../src/internal/shared/errorInfo.js"
import * as Master from "../src/testing/Master.js"
import * as MasterAdmin from "../src/testing/MasterAdmin.js"
import * as WorkerProtocol from "../src/WorkerProtocol.js"
import { admin } from "./e2e/processes.js"

// A fresh connection per client, retried quickly, so a restarted master is reached at once.
const clientOptions: grpc.ClientOptions = {
  "grpc.use_local_subchannel_pool": 1,
  "grpc.initial_reconnect_backoff_ms": 50,
  "grpc.max_reconnect_backoff_ms": 200
}

const client = <C extends grpc.Client>(
  constructor: WorkerProtocol.ClientConstructor<C, grpc.ServiceDefinition>,
  address: string
) =>
  Effect.acquireRelease(
    Effect.sync(() => new constructor(address, grpc.credentials.createInsecure(), clientOptions)),
    (c) => Effect.sync(() => c.close())
  )

const clients = (address: string) =>
  Effect.all({
    node: client(WorkerProtocol.NodeServiceClient, address),
    task: client(WorkerProtocol.TaskServiceClient, address)
  })

const rpc = <A>(start: (options: grpc.CallOptions, callback: grpc.requestCallback<A>) => grpc.ClientUnaryCall) =>
  Effect.async<A, grpc.ServiceError>((resume) => {
    const call = start(
      { deadline: Date.now() + 2000 },
      (error, reply) => resume(error ? Effect.fail(error) : Effect.succeed(reply!))
    )
    return Effect.sync(() => call.cancel())
  })

const register = (c: WorkerProtocol.NodeServiceClient, node_key: string, generation = 1) =>
  rpc<WorkerProtocol.RegisterReply>((o, cb) =>
    c.Register({ node_key, name: `${node_key}-name`, max_runners: 4, generation }, o, cb)
  )
const heartbeat = (c: WorkerProtocol.NodeServiceClient, node_key: string, running = 0) =>
  rpc<WorkerProtocol.HeartbeatReply>((o, cb) => c.SendHeartbeat({ node_key, running }, o, cb))
const fetch = (c: WorkerProtocol.TaskServiceClient, node_key: string, fetch_id = "") =>
  rpc<WorkerProtocol.FetchTaskReply>((o, cb) => c.FetchTask({ node_key, fetch_id }, o, cb)).pipe(
    Effect.map((reply) => reply.task)
  )
const report = (
  c: WorkerProtocol.TaskServiceClient,
  request: Pick<WorkerProtocol.ReportStatusRequest, "task_id" | "node_key" | "idempotency_key"> & {
    readonly status: WorkerProtocol.TaskStatus | number
  }
) =>
  rpc<WorkerProtocol.ReportStatusReply>((o, cb) =>
    c.ReportStatus({ error: "", ...request, status: request.status as WorkerProtocol.TaskStatus }, o, cb)
  ).pipe(Effect.map((reply) => reply.outcome))

const failure = <A>(effect: Effect.Effect<A, grpc.ServiceError>) =>
  Effect.flip(effect).pipe(Effect.map((error) => ({ code: grpc.status[error.code], details: error.details })))

// The `google.rpc.Status` of a `grpc-status-details-bin` trailer, read field by field (status.proto, any.proto):
// its code, its message, and the type of each detail.
const statusOf = (bytes: Uint8Array) => {
  const status = { code: 0, message: "", details: [] as Array<string> }
  const reader = protobuf.Reader.create(bytes)
  while (reader.pos < reader.len) {
    const tag = reader.uint32()
    if (tag === (1 << 3 | 0)) status.code = reader.int32()
    else if (tag === (2 << 3 | 2)) status.message = reader.string()
    else if (tag === (3 << 3 | 2)) {
      const any = protobuf.Reader.create(reader.bytes())
      let typeUrl = ""
      while (any.pos < any.len) {
        const anyTag = any.uint32()
        if (anyTag === (1 << 3 | 2)) typeUrl = any.string()
        else any.skipType(anyTag & 7)
      }
      status.details.push(typeUrl)
    } else reader.skipType(tag & 7)
  }
  return status
}

// A refusal as a worker reads it: the status, and the status details of the trailer: the google.rpc.Status (which
// must say the call's code, as grpc-go checks) and the ErrorInfo in it.
const refusal = (error: grpc.ServiceError) => {
  const [bin] = error.metadata.get(ErrorInfo.trailer)
  return {
    code: grpc.status[error.code],
    details: error.details,
    trailer: bin instanceof Uint8Array ? statusOf(bin) : undefined,
    errorInfo: bin instanceof Uint8Array ? ErrorInfo.decode(bin) : undefined
  }
}
const refused = <A>(effect: Effect.Effect<A, grpc.ServiceError>) => Effect.map(Effect.flip(effect), refusal)

// How the master refuses a node it does not count as a member (proto/worker.proto).
const notRegistered = (node: string) => {
  const details = `node ${node} is not registered; call Register first`
  return {
    code: "FAILED_PRECONDITION",
    details,
    trailer: {
      code: grpc.status.FAILED_PRECONDITION,
      message: details,
      details: ["type.googleapis.com/google.rpc.ErrorInfo"]
    },
    errorInfo: { domain: "worker.v1", reason: "NODE_NOT_REGISTERED", metadata: {} }
  }
}

// Polls a master read until it holds, bounded.
const eventually = <A>(read: Effect.Effect<A>, holds: (a: A) => boolean) =>
  read.pipe(
    Effect.filterOrFail(holds, () => new Error("not yet")),
    Effect.retry(Schedule.spaced("10 millis")),
    Effect.timeoutFail({ duration: "2 seconds", onTimeout: () => new Error("condition not met within 2 s") })
  )

// Opens a Subscribe stream for the scope. `ended` waits for its end: the status the client saw and the error it was
// told of; an OK end is seen only once the stream also emitted 'end', as a clean end does.
const subscribe = (c: WorkerProtocol.NodeServiceClient, node_key: string, generation = 1) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const stream = c.Subscribe({ node_key, generation })
      const received: Array<WorkerProtocol.MasterMessage> = []
      let status: grpc.StatusObject | undefined
      let error: grpc.ServiceError | undefined
      let end = false
      // Keepalives are counted apart: the master's requests are what these tests follow.
      stream.on("data", (message: WorkerProtocol.MasterMessage) => {
        if (message.message !== "keepalive") received.push(message)
      })
      stream.on("error", (e: grpc.ServiceError) => (error = e))
      stream.on("end", () => (end = true))
      stream.on("status", (s: grpc.StatusObject) => (status = s))
      const ended = eventually(
        Effect.sync(() => status),
        (s) => s !== undefined && (s.code !== grpc.status.OK || end)
      ).pipe(Effect.map((s) => ({ code: grpc.status[s!.code], error: error && refusal(error) })))
      return { stream, received, ended }
    }),
    ({ stream }) => Effect.sync(() => stream.cancel())
  )

interface HealthClient extends grpc.Client {
  check(
    request: { service: string },
    options: grpc.CallOptions,
    callback: grpc.requestCallback<{ status: string }>
  ): grpc.ClientUnaryCall
}
const HealthClient = grpc.makeGenericClientConstructor(
  healthService as grpc.ServiceDefinition,
  "Health"
) as unknown as WorkerProtocol.ClientConstructor<HealthClient, grpc.ServiceDefinition>

const tcpHandles = () =>
  process.getActiveResourcesInfo().filter((kind) => kind === "TCPServerWrap" || kind === "TCPSocketWrap")

describe("Master (live loopback)", () => {
  it.scopedLive(
    "hands out the node's own tasks first, then by priority and creation order, never one task twice",
    () =>
      Effect.gen(function*() {
        const master = yield* Master.make()
        const { node, task } = yield* clients(master.address)
        yield* register(node, "n1")
        yield* register(node, "n2")
        const a = yield* master.enqueue({ payload: `{"n":"a"}` })
        const b = yield* master.enqueue({ payload: `{"n":"b"}`, priority: 5 })
        const c = yield* master.enqueue({ payload: `{"n":"c"}`, priority: 5 })
        const d = yield* master.enqueue({ payload: `{"n":"d"}`, node: "n2" })
        const e = yield* master.enqueue({ payload: `{"n":"e"}`, priority: -1, node: "n1" })

        const order: Array<[string, string | undefined]> = []
        for (const key of ["n1", "n2", "n1", "n2", "n1", "n2", "n1"]) {
          order.push([key, (yield* fetch(task, key))?.id])
        }
        assert.deepStrictEqual(order, [
          ["n1", e], // its own task first, despite the lowest priority
          ["n2", d],
          ["n1", b], // then priority 5 before 0, and b before c by creation
          ["n2", c],
          ["n1", a],
          ["n2", undefined],
          ["n1", undefined]
        ])

        const fetched = yield* master.task(b)
        assert.strictEqual(fetched.status, "ASSIGNED")
        assert.strictEqual(fetched.node, "n1")
        assert.strictEqual(fetched.handedOut, 1)
        assert.deepStrictEqual(fetched.history.map((h) => h.status), ["PENDING", "ASSIGNED"])

        // Two nodes fetching at once: every task handed out exactly once.
        const ids = new Set<string>()
        for (let i = 0; i < 20; i++) ids.add(yield* master.enqueue({ payload: "{}", priority: i % 3 }))
        const got = yield* Effect.all(
          Array.from({ length: 30 }, (_, i) => fetch(task, i % 2 === 0 ? "n1" : "n2")),
          { concurrency: "unbounded" }
        )
        const handed = got.flatMap((t) => (t === null ? [] : [t.id]))
        assert.strictEqual(handed.length, 20)
        assert.deepStrictEqual(new Set(handed), ids)
        assert.isTrue((yield* master.tasks).every((t) => t.handedOut === 1 && t.status === "ASSIGNED"))
      }),
    10_000
  )

  it.scopedLive("a retried fetch (the same fetch_id) gets the task it was answered with: a lost reply loses no task", () =>
    Effect.gen(function*() {
      const master = yield* Master.make()
      const { node, task } = yield* clients(master.address)
      yield* register(node, "w1")
      yield* register(node, "w2")
      const a = yield* master.enqueue({ payload: `{"n":"a"}` })
      const b = yield* master.enqueue({ payload: `{"n":"b"}` })
      assert.strictEqual((yield* fetch(task, "w1", "f1"))?.id, a)
      assert.strictEqual((yield* fetch(task, "w1", "f1"))?.id, a)
      assert.strictEqual((yield* fetch(task, "w1", "f2"))?.id, b)
      // Another node's fetch id never reaches this node's task.
      assert.isNull(yield* fetch(task, "w2", "f1"))
      // Once confirmed, the retry gets the next task, if any.
      yield* report(task, { task_id: a, node_key: "w1", status: "RUNNING", idempotency_key: "a-running" })
      assert.isNull(yield* fetch(task, "w1", "f1"))
      assert.strictEqual((yield* master.task(a)).handedOut, 2)
    }))

  it.scopedLive("fetch ids <nonce>/<sequence>: a seen id gets its fetch's answer, never a new task", () =>
    Effect.gen(function*() {
      const master = yield* Master.make()
      const { node, task } = yield* clients(master.address)
      yield* register(node, "w1")
      assert.isNull(yield* fetch(task, "w1", "boot-1/1"))
      // Fetch 1 was answered "no task": a late copy of it must not take task a.
      const a = yield* master.enqueue({ payload: `{"n":"a"}` })
      const b = yield* master.enqueue({ payload: `{"n":"b"}` })
      assert.isNull(yield* fetch(task, "w1", "boot-1/1"))
      assert.strictEqual((yield* fetch(task, "w1", "boot-1/2"))?.id, a)
      // A retry of fetch 2 gets a again; a stale fetch 1 still nothing.
      assert.strictEqual((yield* fetch(task, "w1", "boot-1/2"))?.id, a)
      assert.isNull(yield* fetch(task, "w1", "boot-1/1"))
      assert.strictEqual((yield* fetch(task, "w1", "boot-1/3"))?.id, b)
      // A restarted worker (a new nonce) starts afresh.
      const c = yield* master.enqueue({ payload: `{"n":"c"}` })
      assert.strictEqual((yield* fetch(task, "w1", "boot-2/1"))?.id, c)
      assert.strictEqual((yield* master.task(b)).handedOut, 1)
    }))

  it.scopedLive("a hand-out not confirmed within redeliverAfter goes to the same node again, never to another", () =>
    Effect.gen(function*() {
      const master = yield* Master.make({ redeliverAfter: "200 millis" })
      const { node, task } = yield* clients(master.address)
      yield* register(node, "w1")
      yield* register(node, "w2")
      const id = yield* master.enqueue({ payload: `{"n":1}` })
      assert.strictEqual((yield* fetch(task, "w1"))?.id, id)
      // Unconfirmed, but too soon: nobody gets it.
      assert.isNull(yield* fetch(task, "w1"))
      assert.isNull(yield* fetch(task, "w2"))
      yield* Effect.sleep("250 millis")
      assert.isNull(yield* fetch(task, "w2"))
      assert.strictEqual((yield* fetch(task, "w1"))?.id, id)
      const info = yield* master.task(id)
      assert.strictEqual(info.handedOut, 2)
      assert.deepStrictEqual(info.history.map((h) => h.status), ["PENDING", "ASSIGNED"])
      // Once the node confirms it runs the task, it is never handed out again.
      yield* report(task, { task_id: id, node_key: "w1", status: "RUNNING", idempotency_key: "k1" })
      yield* Effect.sleep("250 millis")
      assert.isNull(yield* fetch(task, "w1"))
    }))

  it.scopedLive(
    "a task arrives as the protocol says: JSON payload, int32 priority, created_at_ms as a string",
    () =>
      Effect.gen(function*() {
        const master = yield* Master.make()
        const { node, task } = yield* clients(master.address)
        yield* register(node, "n1")
        const id = yield* master.enqueue({ payload: `{"url":"https://example.com"}`, priority: 3 })
        const created = (yield* master.task(id)).createdAt
        assert.deepStrictEqual(yield* fetch(task, "n1"), {
          id,
          payload: `{"url":"https://example.com"}`,
          priority: 3,
          created_at_ms: String(created)
        })
      }),
    10_000
  )

  it.scopedLive(
    "ReportStatus is idempotent by its key and only moves the status forward",
    () =>
      Effect.gen(function*() {
        const master = yield* Master.make()
        const { node, task } = yield* clients(master.address)
        yield* register(node, "n1")
        const id = yield* master.enqueue({ payload: "{}" })
        yield* fetch(task, "n1")
        const send = (status: WorkerProtocol.TaskStatus, key: string, node = "n1") =>
          report(task, { task_id: id, node_key: node, status, idempotency_key: key })

        assert.strictEqual(yield* send("RUNNING", "k1"), "ACCEPTED")
        assert.strictEqual(yield* send("RUNNING", "k1"), "DUPLICATE")
        assert.strictEqual(yield* send("FINISHED", "k2"), "ACCEPTED")
        assert.strictEqual(yield* send("RUNNING", "k3"), "STALE")
        assert.strictEqual(yield* send("ERROR", "k4"), "STALE")
        assert.strictEqual(yield* send("FINISHED", "k2"), "DUPLICATE")
        assert.deepStrictEqual(yield* failure(send("FINISHED", "k5", "n2")), {
          code: "FAILED_PRECONDITION",
          details: `task ${id} was not handed out to node n2`
        })

        const info = yield* master.task(id)
        assert.strictEqual(info.status, "FINISHED")
        assert.deepStrictEqual(info.history.map((h) => [h.status, h.node]), [
          ["PENDING", undefined],
          ["ASSIGNED", "n1"],
          ["RUNNING", "n1"],
          ["FINISHED", "n1"]
        ])
        assert.isTrue(info.history.every((h, i) => i === 0 || h.at >= info.history[i - 1]!.at))
      }),
    10_000
  )

  it.scopedLive("heartbeats keep a node online; two missed intervals mark it offline", () =>
    Effect.gen(function*() {
      const master = yield* Master.make({ heartbeatInterval: "200 millis" })
      const { node } = yield* clients(master.address)
      const online = Effect.map(master.nodes, (nodes) => nodes.map((n) => [n.key, n.online]))

      yield* register(node, "n1", 3)
      yield* heartbeat(node, "n1", 2)
      const [registered] = yield* master.nodes
      assert.deepStrictEqual(
        registered && { ...registered, registeredAt: 0, lastHeartbeat: registered.lastHeartbeat !== undefined },
        {
          key: "n1",
          name: "n1-name",
          online: true,
          generation: 3,
          maxRunners: 4,
          running: 2,
          registeredAt: 0,
          lastHeartbeat: true
        }
      )
      yield* Effect.sleep("100 millis")
      assert.deepStrictEqual(yield* online, [["n1", true]])
      yield* Effect.sleep("500 millis")
      assert.deepStrictEqual(yield* online, [["n1", false]])
      yield* heartbeat(node, "n1")
      assert.deepStrictEqual(yield* online, [["n1", true]])
      // Registering again updates the node rather than adding one.
      yield* register(node, "n1", 4)
      assert.deepStrictEqual((yield* master.nodes).map((n) => [n.key, n.generation]), [["n1", 4]])
    }), 10_000)

  it.scopedLive(
    "a worker restarted counts generations from 1 again: a cancel reaches its stream, not its old process's",
    () =>
      Effect.gen(function*() {
        const master = yield* Master.make()
        const { node, task } = yield* clients(master.address)
        yield* register(node, "n1")
        // The previous process's stream, generation 5, still open; then the restarted worker's, generation 1.
        const old = yield* subscribe(node, "n1", 5)
        yield* eventually(master.subscriptions, (n) => n === 1)
        const restarted = yield* subscribe(node, "n1", 1)
        yield* eventually(master.subscriptions, (n) => n === 2)
        const id = yield* master.enqueue({ payload: "{}" })
        yield* fetch(task, "n1")
        assert.strictEqual(yield* master.cancel(id), "Notified")
        yield* eventually(Effect.sync(() => restarted.received.length), (n) => n === 1)
        assert.deepStrictEqual(restarted.received, [{ cancel_task: { task_id: id }, message: "cancel_task" }])
        assert.deepStrictEqual(old.received, [])
      }),
    10_000
  )

  it.scopedLive(
    "the end of an old generation's stream leaves the newer one: cancel still reaches generation 2",
    () =>
      Effect.gen(function*() {
        const master = yield* Master.make()
        const { node, task } = yield* clients(master.address)
        yield* register(node, "n1")
        const open = (generation: number) =>
          Effect.acquireRelease(
            Effect.sync(() => {
              const stream = node.Subscribe({ node_key: "n1", generation })
              const received: Array<WorkerProtocol.MasterMessage> = []
              // Keepalives are counted apart: the master's requests are what these tests follow.
              stream.on("data", (message: WorkerProtocol.MasterMessage) => {
                if (message.message !== "keepalive") received.push(message)
              })
              stream.on("error", () => {}) // CANCELLED when we end it
              return { stream, received }
            }),
            ({ stream }) => Effect.sync(() => stream.cancel())
          )
        const first = yield* open(1)
        yield* eventually(master.subscriptions, (n) => n === 1)
        const second = yield* open(2)
        yield* eventually(master.subscriptions, (n) => n === 2)
        first.stream.cancel()
        yield* eventually(master.subscriptions, (n) => n === 1)

        const id = yield* master.enqueue({ payload: "{}" })
        yield* fetch(task, "n1")
        assert.strictEqual(yield* master.cancel(id), "Notified")
        yield* eventually(Effect.sync(() => second.received.length), (n) => n === 1)
        assert.deepStrictEqual(second.received, [{ cancel_task: { task_id: id }, message: "cancel_task" }])
        assert.deepStrictEqual(first.received, [])

        assert.strictEqual((yield* master.task(id)).status, "CANCELLED")
        assert.strictEqual(
          yield* report(task, { task_id: id, node_key: "n1", status: "FINISHED", idempotency_key: "late" }),
          "STALE"
        )
        assert.strictEqual(yield* master.cancel(id), "AlreadyEnded")
        const pending = yield* master.enqueue({ payload: "{}" })
        assert.strictEqual(yield* master.cancel(pending), "NotHandedOut")
        assert.strictEqual(yield* fetch(task, "n1"), null)
      }),
    10_000
  )

  it.scopedLive(
    "a second stream of the same node and generation replaces the first, which ends",
    () =>
      Effect.gen(function*() {
        const master = yield* Master.make()
        const { node, task } = yield* clients(master.address)
        yield* register(node, "n1")
        const old = node.Subscribe({ node_key: "n1", generation: 1 })
        let ended: string | undefined
        old.on("data", () => {})
        old.on("status", (status: grpc.StatusObject) => (ended = grpc.status[status.code]))
        yield* eventually(master.subscriptions, (n) => n === 1)
        const current = node.Subscribe({ node_key: "n1", generation: 1 })
        const received: Array<WorkerProtocol.MasterMessage> = []
        current.on("data", (message: WorkerProtocol.MasterMessage) => received.push(message))
        current.on("error", () => {})
        yield* Effect.addFinalizer(() => Effect.sync(() => current.cancel()))
        assert.strictEqual(yield* eventually(Effect.sync(() => ended), (status) => status !== undefined), "OK")
        assert.strictEqual(yield* master.subscriptions, 1)

        const id = yield* master.enqueue({ payload: "{}" })
        yield* fetch(task, "n1")
        assert.strictEqual(yield* master.cancel(id), "Notified")
        yield* eventually(Effect.sync(() => received.length), (n) => n === 1)
      }),
    10_000
  )

  it.scopedLive(
    "the health service answers SERVING, then NOT_SERVING after setServing(false)",
    () =>
      Effect.gen(function*() {
        const master = yield* Master.make()
        const health = yield* client(HealthClient, master.address)
        const check = (service: string) =>
          rpc<{ status: string }>((o, cb) => health.check({ service }, o, cb)).pipe(Effect.map((r) => r.status))
        const all = Effect.all(["", WorkerProtocol.serviceNames.node, WorkerProtocol.serviceNames.task].map(check))

        assert.deepStrictEqual(yield* all, ["SERVING", "SERVING", "SERVING"])
        yield* master.setServing(false)
        assert.deepStrictEqual(yield* all, ["NOT_SERVING", "NOT_SERVING", "NOT_SERVING"])
        yield* master.setServing(true)
        assert.deepStrictEqual(yield* all, ["SERVING", "SERVING", "SERVING"])
        assert.strictEqual((yield* failure(check("unknown.Service"))).code, "NOT_FOUND")
      }),
    10_000
  )

  it.scopedLive(
    "stop drops the master; restart binds the same port and keeps tasks and nodes",
    () =>
      Effect.gen(function*() {
        const master = yield* Master.make()
        const before = yield* clients(master.address)
        yield* register(before.node, "n1")
        const first = yield* master.enqueue({ payload: "{}", priority: 1 })
        const second = yield* master.enqueue({ payload: "{}" })
        assert.strictEqual((yield* fetch(before.task, "n1"))?.id, first)

        yield* master.stop
        yield* master.stop // idempotent
        assert.strictEqual((yield* failure(fetch(before.task, "n1"))).code, "UNAVAILABLE")

        yield* master.restart
        assert.strictEqual(master.address, `127.0.0.1:${master.port}`)
        const after = yield* clients(master.address)
        assert.strictEqual((yield* fetch(after.task, "n1"))?.id, second)
        assert.deepStrictEqual((yield* master.tasks).map((t) => [t.id, t.status, t.handedOut]), [
          [first, "ASSIGNED", 1],
          [second, "ASSIGNED", 1]
        ])
        yield* heartbeat(after.node, "n1")
        assert.deepStrictEqual((yield* master.nodes).map((n) => n.key), ["n1"])
        // restart of a running master: stop, then bind again.
        yield* master.restart
        const again = yield* clients(master.address)
        assert.strictEqual(yield* fetch(again.task, "n1"), null)
      }),
    10_000
  )

  it.scopedLive(
    "failureRate 1 fails every Register, SendHeartbeat, FetchTask and ReportStatus with UNAVAILABLE",
    () =>
      Effect.gen(function*() {
        const master = yield* Master.make({ failureRate: 1 })
        const { node, task } = yield* clients(master.address)
        const id = yield* master.enqueue({ payload: "{}" })
        const codes = yield* Effect.all([
          failure(register(node, "n1")),
          failure(heartbeat(node, "n1")),
          failure(fetch(task, "n1")),
          failure(report(task, { task_id: id, node_key: "n1", status: "RUNNING", idempotency_key: "k" }))
        ]).pipe(Effect.map((errors) => errors.map((e) => e.code)))
        assert.deepStrictEqual(codes, ["UNAVAILABLE", "UNAVAILABLE", "UNAVAILABLE", "UNAVAILABLE"])
        // A failed call changed nothing.
        assert.deepStrictEqual(yield* master.nodes, [])
        assert.strictEqual((yield* master.task(id)).handedOut, 0)

        yield* master.setFailureRate(0)
        yield* register(node, "n1")
        assert.strictEqual((yield* fetch(task, "n1"))?.id, id)
        assert.strictEqual((yield* Effect.flip(master.setFailureRate(1.5))).reason, "InvalidOption")
      }),
    10_000
  )

  it.live("a seeded Random fails the same calls on every run", () =>
    Effect.gen(function*() {
      // A fresh generator per run, from the same seed.
      const pattern = Effect.suspend(() =>
        Effect.gen(function*() {
          const master = yield* Master.make({ failureRate: 0.5 })
          const { node, task } = yield* clients(master.address)
          // A node fetches once registered; the registration may fail on purpose too, so it is tried again.
          yield* register(node, "n1").pipe(
            Effect.retry({ times: 20, while: (error) => error.code === grpc.status.UNAVAILABLE })
          )
          const outcomes: Array<boolean> = []
          for (let i = 0; i < 16; i++) outcomes.push(Exit.isSuccess(yield* Effect.exit(fetch(task, "n1"))))
          return outcomes
        }).pipe(Effect.scoped, Effect.withRandom(Random.make("master-seed")))
      )
      const first = yield* pattern
      assert.deepStrictEqual(yield* pattern, first)
      assert.isTrue(first.includes(true) && first.includes(false), `expected both outcomes, got ${first}`)
    }), 10_000)

  it.scopedLive(
    "answers bad requests with INVALID_ARGUMENT, NOT_FOUND and a clear message",
    () =>
      Effect.gen(function*() {
        const master = yield* Master.make()
        const { node, task } = yield* clients(master.address)
        const id = yield* master.enqueue({ payload: "{}" })
        yield* register(node, "n1")
        yield* fetch(task, "n1")
        const reportWith = (
          status: WorkerProtocol.TaskStatus | number,
          overrides: Partial<WorkerProtocol.ReportStatusRequest> = {}
        ) => failure(report(task, { task_id: id, node_key: "n1", status, idempotency_key: "k", ...overrides }))

        assert.deepStrictEqual(yield* failure(fetch(task, "")), {
          code: "INVALID_ARGUMENT",
          details: "node_key is empty"
        })
        assert.deepStrictEqual(yield* failure(register(node, "")), {
          code: "INVALID_ARGUMENT",
          details: "node_key is empty"
        })
        // An unknown node's heartbeat is answered, not refused: it is told it is not a member, and nothing is recorded.
        assert.deepStrictEqual(yield* heartbeat(node, "ghost"), {
          membership: "NOT_MEMBER",
          incarnation: master.incarnation
        })
        assert.deepStrictEqual((yield* master.nodes).map((n) => n.key), ["n1"])
        assert.deepStrictEqual(yield* refused(fetch(task, "ghost")), notRegistered("ghost"))
        assert.deepStrictEqual(yield* reportWith("RUNNING", { task_id: "task-404" }), {
          code: "NOT_FOUND",
          details: "task task-404 not found"
        })
        assert.deepStrictEqual(yield* reportWith(42), { code: "INVALID_ARGUMENT", details: "unknown status 42" })
        assert.deepStrictEqual(yield* reportWith("TASK_STATUS_UNSPECIFIED"), {
          code: "INVALID_ARGUMENT",
          details: "unknown status TASK_STATUS_UNSPECIFIED"
        })
        assert.deepStrictEqual(yield* reportWith("PENDING"), {
          code: "INVALID_ARGUMENT",
          details: "status PENDING is set by the master; a worker reports RUNNING, FINISHED, ERROR or CANCELLED"
        })
        assert.deepStrictEqual(yield* reportWith("RUNNING", { idempotency_key: "" }), {
          code: "INVALID_ARGUMENT",
          details: "idempotency_key is empty"
        })
        // Nothing above changed the task.
        assert.strictEqual((yield* master.task(id)).status, "ASSIGNED")

        const stream = node.Subscribe({ node_key: "ghost", generation: 1 })
        const ended = yield* Effect.async<grpc.ServiceError>((resume) => {
          stream.on("error", (error: grpc.ServiceError) => resume(Effect.succeed(error)))
        })
        assert.deepStrictEqual(refusal(ended), notRegistered("ghost"))

        assert.strictEqual((yield* Effect.flip(master.task("task-404"))).reason, "UnknownTask")
        assert.strictEqual((yield* Effect.flip(master.cancel("task-404"))).reason, "UnknownTask")
        assert.strictEqual(
          (yield* Effect.flip(master.enqueue({ payload: "{}", priority: 2 ** 31 }))).reason,
          "InvalidOption"
        )
        const invalid = yield* Effect.flip(Master.make({ failureRate: 2 }))
        assert.deepStrictEqual([invalid.reason, invalid.message], [
          "InvalidOption",
          "invalid option failureRate: expected a number from 0 to 1, got 2"
        ])
        assert.strictEqual((yield* Effect.flip(Master.make({ heartbeatInterval: "0 millis" }))).reason, "InvalidOption")
      }),
    10_000
  )

  it.scopedLive("a Subscribe stream has a keepalive at once, naming its interval, and one every interval after", () =>
    Effect.gen(function*() {
      const master = yield* Master.make({ subscribeKeepalive: "200 millis" })
      const { node } = yield* clients(master.address)
      yield* register(node, "n1")
      const stream = node.Subscribe({ node_key: "n1", generation: 1 })
      const keepalives: Array<number> = []
      stream.on("data", (message: WorkerProtocol.MasterMessage) => {
        if (message.message === "keepalive") keepalives.push(message.keepalive!.interval_ms)
      })
      stream.on("error", () => {})
      yield* Effect.addFinalizer(() => Effect.sync(() => stream.cancel()))
      yield* eventually(Effect.sync(() => keepalives.length), (n) => n >= 3)
      assert.deepStrictEqual(keepalives.slice(0, 3), [200, 200, 200])
    }))

  it.scopedLive(
    "a node that is not registered is refused FetchTask with FAILED_PRECONDITION and NODE_NOT_REGISTERED in the trailer",
    () =>
      Effect.gen(function*() {
        const master = yield* Master.make()
        const { node, task } = yield* clients(master.address)
        const id = yield* master.enqueue({ payload: "{}" })

        assert.deepStrictEqual(yield* refused(fetch(task, "n1")), notRegistered("n1"))
        assert.deepStrictEqual(yield* refused(fetch(task, "n1", "boot-1/1")), notRegistered("n1"))
        // The refusal handed nothing out.
        const untouched = yield* master.task(id)
        assert.deepStrictEqual([untouched.status, untouched.handedOut, untouched.node], ["PENDING", 0, undefined])

        yield* register(node, "n1")
        assert.strictEqual((yield* fetch(task, "n1", "boot-1/1"))?.id, id)
        // Another node stays refused: one node's registration is not another's.
        assert.deepStrictEqual(yield* refused(fetch(task, "n2")), notRegistered("n2"))
      }),
    10_000
  )

  it.scopedLive(
    "heartbeats answer NOT_MEMBER for an unknown node and MEMBER for a registered one, with the master's incarnation",
    () =>
      Effect.gen(function*() {
        const master = yield* Master.make()
        const { node } = yield* clients(master.address)
        assert.isNotEmpty(master.incarnation)

        assert.deepStrictEqual(yield* heartbeat(node, "n1", 2), {
          membership: "NOT_MEMBER",
          incarnation: master.incarnation
        })
        // Not a registration: the master still does not know the node.
        assert.deepStrictEqual(yield* master.nodes, [])

        assert.deepStrictEqual(yield* register(node, "n1"), { incarnation: master.incarnation })
        assert.deepStrictEqual(yield* heartbeat(node, "n1", 2), {
          membership: "MEMBER",
          incarnation: master.incarnation
        })
        assert.deepStrictEqual((yield* master.nodes).map((n) => [n.key, n.running]), [["n1", 2]])
        assert.deepStrictEqual(yield* heartbeat(node, "n2"), {
          membership: "NOT_MEMBER",
          incarnation: master.incarnation
        })
      }),
    10_000
  )

  it.scopedLive(
    "Register answers the master's incarnation: restart keeps it (and the memory), a new master has another",
    () =>
      Effect.gen(function*() {
        const first = yield* Master.make()
        const before = yield* clients(first.address)
        const { incarnation } = yield* register(before.node, "n1")
        assert.strictEqual(incarnation, first.incarnation)
        assert.isNotEmpty(incarnation)

        yield* first.restart
        const after = yield* clients(first.address)
        assert.strictEqual(first.incarnation, incarnation)
        // The same memory: the node is still a member, and the same incarnation says so.
        assert.deepStrictEqual(yield* heartbeat(after.node, "n1"), { membership: "MEMBER", incarnation })
        assert.deepStrictEqual(yield* register(after.node, "n1", 2), { incarnation })

        const second = yield* Master.make()
        const other = yield* clients(second.address)
        assert.notStrictEqual(second.incarnation, incarnation)
        assert.deepStrictEqual(yield* heartbeat(other.node, "n1"), {
          membership: "NOT_MEMBER",
          incarnation: second.incarnation
        })
        assert.deepStrictEqual(yield* register(other.node, "n1"), { incarnation: second.incarnation })
      }),
    10_000
  )

  it.scopedLive(
    "forget ends the node's stream with NODE_NOT_REGISTERED and refuses its fetches until it registers again",
    () =>
      Effect.gen(function*() {
        const master = yield* Master.make()
        const { node, task } = yield* clients(master.address)
        yield* register(node, "n1")
        yield* register(node, "n2")
        const given = yield* master.enqueue({ payload: `{"n":"given"}` })
        assert.strictEqual((yield* fetch(task, "n1"))?.id, given)
        const own = yield* master.enqueue({ payload: `{"n":"own"}`, node: "n1" })
        const stream = yield* subscribe(node, "n1")
        const bystander = yield* subscribe(node, "n2")
        yield* eventually(master.subscriptions, (n) => n === 2)

        assert.isTrue(yield* master.forget("n1"))
        assert.deepStrictEqual(yield* stream.ended, { code: "FAILED_PRECONDITION", error: notRegistered("n1") })
        assert.strictEqual(yield* eventually(master.subscriptions, (n) => n === 1), 1)
        assert.deepStrictEqual((yield* master.nodes).map((n) => n.key), ["n2"])
        assert.deepStrictEqual(yield* refused(fetch(task, "n1")), notRegistered("n1"))
        assert.deepStrictEqual(yield* heartbeat(node, "n1"), {
          membership: "NOT_MEMBER",
          incarnation: master.incarnation
        })
        // A new stream is refused too.
        assert.deepStrictEqual(yield* (yield* subscribe(node, "n1", 2)).ended, {
          code: "FAILED_PRECONDITION",
          error: notRegistered("n1")
        })
        assert.isFalse(yield* master.forget("n1"))
        assert.isFalse(yield* master.forget("ghost"))

        // Its tasks stay as they were.
        assert.deepStrictEqual((yield* master.tasks).map((t) => [t.id, t.status, t.node]), [
          [given, "ASSIGNED", "n1"],
          [own, "PENDING", "n1"]
        ])
        // Registered again, it is a member and fetches its task; another node's stream was never touched.
        assert.deepStrictEqual(yield* register(node, "n1", 2), { incarnation: master.incarnation })
        assert.deepStrictEqual(yield* heartbeat(node, "n1"), { membership: "MEMBER", incarnation: master.incarnation })
        assert.strictEqual((yield* fetch(task, "n1"))?.id, own)
        const again = yield* subscribe(node, "n1", 2)
        yield* eventually(master.subscriptions, (n) => n === 2)
        assert.strictEqual(yield* master.cancel(own), "Notified")
        yield* eventually(Effect.sync(() => again.received.length), (n) => n === 1)
        assert.deepStrictEqual(again.received, [{ cancel_task: { task_id: own }, message: "cancel_task" }])
        assert.deepStrictEqual([stream.received, bystander.received], [[], []])
      }),
    10_000
  )

  it.scopedLive(
    "task ids: a master made again on the same port, with empty memory, never hands out an id used before",
    () =>
      Effect.gen(function*() {
        // A worker that outlives both masters, as one behind a stable address does.
        const port = yield* Effect.scoped(Effect.map(Master.make(), (master) => master.port))
        const { node, task } = yield* clients(`127.0.0.1:${port}`)
        const life = Effect.scoped(Effect.gen(function*() {
          const master = yield* Master.make({ port })
          // Empty memory: the node must register again before it fetches.
          assert.deepStrictEqual(yield* refused(fetch(task, "n1")), notRegistered("n1"))
          yield* register(node, "n1")
          for (let i = 0; i < 3; i++) yield* master.enqueue({ payload: "{}" })
          const ids: Array<string | undefined> = []
          for (let i = 0; i < 3; i++) ids.push((yield* fetch(task, "n1"))?.id)
          return { incarnation: master.incarnation, ids }
        }))
        const first = yield* life
        const second = yield* life
        assert.notStrictEqual(first.incarnation, second.incarnation)
        assert.deepStrictEqual(first.ids, [1, 2, 3].map((n) => `task-${first.incarnation}-${n}`))
        assert.deepStrictEqual(second.ids, [1, 2, 3].map((n) => `task-${second.incarnation}-${n}`))
        assert.deepStrictEqual(first.ids.filter((id) => second.ids.includes(id)), [])
      }),
    10_000
  )

  it.scopedLive(
    "closing a master's scope ends its open Subscribe stream with OK, not an error",
    () =>
      Effect.gen(function*() {
        const scope = yield* Scope.make()
        const master = yield* Master.make().pipe(Scope.extend(scope))
        // The worker's client outlives the master.
        const { node } = yield* clients(master.address)
        yield* register(node, "n1")
        const stream = yield* subscribe(node, "n1")
        yield* eventually(master.subscriptions, (n) => n === 1)

        yield* Scope.close(scope, Exit.void)
        // Ended with OK, before the grace period's forced close (which would end it CANCELLED).
        assert.deepStrictEqual(yield* stream.ended, { code: "OK", error: undefined })
        assert.strictEqual(yield* master.subscriptions, 0)
      }),
    10_000
  )

  it.scopedLive(
    "the admin API: GET /subscriptions counts the open streams, POST /cancel is Master.cancel",
    () =>
      Effect.gen(function*() {
        const master = yield* Master.make()
        const directory = yield* Effect.acquireRelease(
          Effect.sync(() => mkdtempSync(join(tmpdir(), "admin-"))),
          (directory) => Effect.sync(() => rmSync(directory, { recursive: true, force: true }))
        )
        const socket = join(directory, "admin.sock")
        // A Unix socket, as the master command serves it: no TCP handle for the test after this one to wait for.
        yield* Layer.launch(
          HttpServer.serve(MasterAdmin.router).pipe(
            Layer.provide(NodeHttpServer.layer(createServer, { path: socket })),
            Layer.provide(Layer.succeed(Master.Master, master))
          )
        ).pipe(Effect.forkScoped)
        const api = <A>(method: "GET" | "POST", path: string, body?: unknown) => admin<A>(socket, method, path, body)
        yield* eventually(Effect.orElseSucceed(api("GET", "/subscriptions"), () => undefined), (r) => r !== undefined)

        const { node, task } = yield* clients(master.address)
        yield* register(node, "n1")
        const stream = node.Subscribe({ node_key: "n1", generation: 1 })
        const received: Array<WorkerProtocol.MasterMessage> = []
        // Keepalives are counted apart: the master's requests are what these tests follow.
        stream.on("data", (message: WorkerProtocol.MasterMessage) => {
          if (message.message !== "keepalive") received.push(message)
        })
        stream.on("error", () => {})
        yield* Effect.addFinalizer(() => Effect.sync(() => stream.cancel()))
        yield* eventually(api<{ open: number }>("GET", "/subscriptions").pipe(Effect.orDie), (r) => r.open === 1)

        const { id } = yield* api<{ id: string }>("POST", "/tasks", { payload: {} })
        yield* fetch(task, "n1")
        assert.deepStrictEqual(yield* api("POST", "/cancel", { id }), { outcome: "Notified" })
        yield* eventually(Effect.sync(() => received.length), (n) => n === 1)
        assert.deepStrictEqual(received, [{ cancel_task: { task_id: id }, message: "cancel_task" }])
        assert.strictEqual((yield* master.task(id)).status, "CANCELLED")
        assert.deepStrictEqual(yield* api("POST", "/cancel", { id }), { outcome: "AlreadyEnded" })
        const pending = yield* api<{ id: string }>("POST", "/tasks", { payload: {} })
        assert.deepStrictEqual(yield* api("POST", "/cancel", pending), { outcome: "NotHandedOut" })
        assert.match(
          (yield* Effect.flip(api("POST", "/cancel", { id: "task-404" }))).message,
          /: 404 task task-404 not found$/
        )
        assert.match((yield* Effect.flip(api("POST", "/cancel", { task: id }))).message, /^POST \/cancel: 400/)
      }),
    10_000
  )

  it.live("closing the scope shuts the master down and leaves no open handle", () =>
    Effect.gen(function*() {
      // Sockets of the earlier tests close on the next turns of the event loop.
      yield* eventually(Effect.sync(tcpHandles), (handles) => handles.length === 0)
      const scope = yield* Scope.make()
      const master = yield* Master.make().pipe(Scope.extend(scope))
      const { node } = yield* clients(master.address).pipe(Scope.extend(scope))
      yield* register(node, "n1")
      const stream = node.Subscribe({ node_key: "n1", generation: 1 })
      stream.on("error", () => {})
      yield* eventually(master.subscriptions, (n) => n === 1)
      assert.include(tcpHandles(), "TCPServerWrap")
      yield* Scope.close(scope, Exit.void)
      yield* eventually(Effect.sync(tcpHandles), (handles) => handles.length === 0)
    }), 10_000)
})
