import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { assert, describe, it } from "@effect/vitest"
import * as grpc from "@grpc/grpc-js"
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { service as healthService } from "grpc-health-check"
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import * as Connection from "../src/Connection.js"
import type * as ConnectionState from "../src/ConnectionState.js"
import * as Credentials from "../src/Credentials.js"
import * as Env from "../src/Env.js"
import * as GrpcChannel from "../src/GrpcChannel.js"
import * as GrpcError from "../src/GrpcError.js"
import * as Outbox from "../src/Outbox.js"
import * as TaskHandler from "../src/TaskHandler.js"
import * as TaskSource from "../src/TaskSource.js"
import * as Master from "../src/testing/Master.js"
import * as Certs from "./fixtures/certs.js"
import { MasterLink } from "./fixtures/masterLink.js"
import { eventually } from "./fixtures/poll.js"

const token = Redacted.make("s3cr3t-Token.for-the-master")
const wrongToken = Redacted.make("not-the-token-0123456789")

const credentials = (options: Credentials.Options) =>
  Credentials.make(options).pipe(Effect.provide(NodeFileSystem.layer))

// A connection in the test's scope that gives up on a bad link quickly, so a failing case is seen in seconds.
const connect = (address: string, channelCredentials: grpc.ChannelCredentials) =>
  Connection.make({
    address,
    services: TaskSource.services,
    credentials: channelCredentials,
    connectTimeout: "2 seconds",
    reconnectSchedule: Schedule.spaced("200 millis"),
    readiness: { interval: "100 millis", bound: "2 seconds", probeTimeout: "1 second" }
  }).pipe(Effect.provide(GrpcChannel.layer))

const awaitReady = (conn: Connection.Connection) =>
  conn.changes.pipe(
    Stream.filter((state) => state._tag === "Ready"),
    Stream.runHead,
    Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => new Error("not Ready within 10 s") })
  )

// Every state the connection goes through within the window.
const statesWithin = (conn: Connection.Connection, window: Duration.DurationInput) =>
  conn.changes.pipe(Stream.interruptWhen(Effect.sleep(window)), Stream.runCollect, Effect.map((states) => [...states]))

const assertNeverReady = (states: ReadonlyArray<ConnectionState.ConnectionState>) => {
  assert.isFalse(states.some((state) => state._tag === "Ready"), `never Ready: ${states.map((s) => s._tag).join(", ")}`)
  // More than one attempt was made, and each failed.
  assert.isTrue(
    states.some((state) => "attempt" in state && state.attempt >= 2 && state._tag === "Reconnecting") ||
      states.some((state) => state._tag === "Rejected"),
    `attempts failed: ${states.map((s) => s._tag).join(", ")}`
  )
}

// A fetch as a worker makes it: registered first, as the master requires.
const fetchTask = (conn: Connection.Connection<typeof TaskSource.services>) =>
  conn.call("node", "Register", { node_key: "w1", name: "w1", max_runners: 1, generation: 1 }, { retry: false }).pipe(
    Effect.zipRight(conn.call("task", "FetchTask", { node_key: "w1", fetch_id: "" }, { retry: false }))
  )

const HealthClient = grpc.makeGenericClientConstructor(healthService, "Health")

// One health Check on a channel of its own: the status, or the failure's code name.
const healthCheck = (address: string, channelCredentials: grpc.ChannelCredentials) =>
  Effect.acquireRelease(
    Effect.sync(() => new HealthClient(address, channelCredentials, { "grpc.use_local_subchannel_pool": 1 })),
    (client) => Effect.sync(() => client.close())
  ).pipe(
    Effect.flatMap((client) =>
      Effect.async<string>((resume) => {
        const call = client["check"]!({ service: "" }, { deadline: Date.now() + 5000 }, (
          error: grpc.ServiceError | null,
          reply?: { status?: string }
        ) => resume(Effect.succeed(error === null ? String(reply?.status) : grpc.status[error.code])))
        return Effect.sync(() => call.cancel())
      })
    )
  )

const tlsOf = (certs: Certs.Certs, mutual = false): Master.TlsOptions => ({
  cert: certs.server.cert.pem,
  key: certs.server.key.pem,
  ...(mutual ? { ca: certs.ca.pem } : {})
})

describe("Credentials (live loopback, embedded master)", () => {
  it.scopedLive(
    "TLS: a connection that trusts the test CA reaches Ready, and FetchTask and the health check answer",
    () =>
      Effect.gen(function*() {
        const certs = yield* Certs.make
        const master = yield* Master.make({ tls: tlsOf(certs) })
        const id = yield* master.enqueue({ payload: "{}" })
        const creds = yield* credentials({ ca: certs.ca.path })
        const conn = yield* connect(master.address, creds)
        yield* awaitReady(conn)
        const reply = yield* fetchTask(conn)
        assert.strictEqual(reply.task?.id, id)
        assert.strictEqual(yield* healthCheck(master.address, creds), "SERVING")
        // Plaintext against a TLS master: no answer.
        assert.strictEqual(yield* healthCheck(master.address, grpc.credentials.createInsecure()), "UNAVAILABLE")
      }),
    30_000
  )

  it.scopedLive(
    "serverName: the master's certificate is checked against it, not against the address",
    () =>
      Effect.gen(function*() {
        const certs = yield* Certs.make
        const master = yield* Master.make({ tls: tlsOf(certs) })
        const right = yield* credentials({ ca: certs.ca.path, serverName: "localhost" })
        assert.strictEqual(yield* healthCheck(master.address, right), "SERVING")
        const wrong = yield* credentials({ ca: certs.ca.path, serverName: "master.example" })
        assert.strictEqual(yield* healthCheck(master.address, wrong), "UNAVAILABLE")
      }),
    30_000
  )

  it.scopedLive(
    "a CA that did not sign the master's certificate: never Ready, every attempt fails",
    () =>
      Effect.gen(function*() {
        const certs = yield* Certs.make
        const master = yield* Master.make({ tls: tlsOf(certs) })
        const conn = yield* connect(master.address, yield* credentials({ ca: certs.otherCa.path }))
        assertNeverReady(yield* statesWithin(conn, "2500 millis"))
      }),
    30_000
  )

  it.scopedLive("mutual TLS: Ready with the client certificate; never Ready without it", () =>
    Effect.gen(function*() {
      const certs = yield* Certs.make
      const master = yield* Master.make({ tls: tlsOf(certs, true) })
      const withCert = yield* credentials({
        ca: certs.ca.path,
        cert: certs.client.cert.path,
        key: certs.client.key.path
      })
      const conn = yield* connect(master.address, withCert)
      yield* awaitReady(conn)
      assert.isNull((yield* fetchTask(conn)).task)

      const withoutCert = yield* connect(master.address, yield* credentials({ ca: certs.ca.path }))
      assertNeverReady(yield* statesWithin(withoutCert, "2500 millis"))
      assert.strictEqual(yield* healthCheck(master.address, yield* credentials({ ca: certs.ca.path })), "UNAVAILABLE")
    }), 30_000)

  it.scopedLive(
    "token: the right one is served, none is UNAUTHENTICATED, a wrong one PERMISSION_DENIED",
    () =>
      Effect.gen(function*() {
        const certs = yield* Certs.make
        // Health open, so every connection reaches Ready and the calls show the master's answer.
        const master = yield* Master.make({ tls: tlsOf(certs), token, healthWithoutToken: true })
        const codeOf = (creds: grpc.ChannelCredentials) =>
          Effect.gen(function*() {
            const conn = yield* connect(master.address, creds)
            yield* awaitReady(conn)
            return yield* fetchTask(conn).pipe(
              Effect.match({
                onSuccess: () => "OK",
                onFailure: (error) => (error instanceof GrpcError.GrpcError ? grpc.status[error.code] : error._tag)
              })
            )
          })
        assert.strictEqual(yield* codeOf(yield* credentials({ ca: certs.ca.path, token })), "OK")
        assert.strictEqual(yield* codeOf(yield* credentials({ ca: certs.ca.path })), "UNAUTHENTICATED")
        assert.strictEqual(
          yield* codeOf(yield* credentials({ ca: certs.ca.path, token: wrongToken })),
          "PERMISSION_DENIED"
        )
      }),
    30_000
  )

  it.scopedLive(
    "a call refused for its credentials: Rejected over a real channel, calls fail at once, no hammering",
    () =>
      Effect.gen(function*() {
        const certs = yield* Certs.make
        // Health open, so the wrong token passes readiness and the refusal comes from a call.
        const master = yield* Master.make({ tls: tlsOf(certs), token, healthWithoutToken: true })
        const conn = yield* Connection.make({
          address: master.address,
          services: TaskSource.services,
          credentials: yield* credentials({ ca: certs.ca.path, token: wrongToken }),
          reconnectSchedule: Schedule.spaced("200 millis"),
          readiness: { interval: "100 millis", bound: "2 seconds", probeTimeout: "1 second" },
          rejectedSchedule: Schedule.spaced("3 seconds")
        }).pipe(Effect.provide(GrpcChannel.layer))
        yield* awaitReady(conn)
        const fetch = conn.call("task", "FetchTask", { node_key: "w1", fetch_id: "" })

        const refusal = yield* Effect.flip(fetch)
        assert.isTrue(
          refusal instanceof GrpcError.GrpcError && refusal.code === grpc.status.PERMISSION_DENIED,
          String(refusal)
        )
        const rejected = yield* conn.changes.pipe(
          Stream.filter((state) => state._tag === "Rejected"),
          Stream.runHead,
          Effect.flatten,
          Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error("not Rejected within 5 s") })
        )
        assert.include(rejected.lastError.message, "PERMISSION_DENIED")
        assert.isAtLeast(rejected.retryAt - rejected.since, 2500, "the next try waits for the slow schedule")

        // A call now fails at once, typed: the lookup sees Rejected and does not wait for a link.
        const fast = yield* Effect.flip(fetch)
        assert.isTrue(fast._tag === "ClientUnavailable" && fast.reason === "Rejected", String(fast))
        // And the connection stays Rejected until then: no attempts in between.
        const states = yield* statesWithin(conn, "1500 millis")
        assert.deepStrictEqual(states.map((state) => state._tag), ["Rejected"])
      }),
    30_000
  )

  it.scopedLive(
    "token: the health service needs it too by default, so a wrong token never gets Ready",
    () =>
      Effect.gen(function*() {
        const certs = yield* Certs.make
        const master = yield* Master.make({ tls: tlsOf(certs), token })
        const right = yield* credentials({ ca: certs.ca.path, token })
        assert.strictEqual(yield* healthCheck(master.address, right), "SERVING")
        assert.strictEqual(
          yield* healthCheck(master.address, yield* credentials({ ca: certs.ca.path })),
          "UNAUTHENTICATED"
        )
        const wrong = yield* credentials({ ca: certs.ca.path, token: wrongToken })
        assert.strictEqual(yield* healthCheck(master.address, wrong), "PERMISSION_DENIED")

        // The probe runs on the connection's channel with throwaway insecure credentials: the token still goes.
        yield* awaitReady(yield* connect(master.address, right))
        const conn = yield* connect(master.address, wrong)
        const report = conn.readiness.changes.pipe(
          Stream.map((status) => status.report.checks.probe),
          Stream.filter((probe) => probe._tag === "Failed"),
          Stream.runHead,
          Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error("no failed probe within 5 s") })
        )
        const probe = yield* Effect.flatten(report)
        assert.include(probe._tag === "Failed" ? probe.message : "", "PERMISSION_DENIED")
        assertNeverReady(yield* statesWithin(conn, "1500 millis"))
      }),
    30_000
  )

  it.scopedLive(
    "token without TLS: refused unless allowInsecureToken, which then sends it in plaintext",
    () =>
      Effect.gen(function*() {
        const master = yield* Master.make({ token })
        const refused = yield* Effect.flip(credentials({ token }))
        assert.strictEqual(refused.reason, "TokenWithoutTls")
        assert.strictEqual(refused.option, "token")
        const creds = yield* credentials({ token, allowInsecureToken: true })
        const conn = yield* connect(master.address, creds)
        yield* awaitReady(conn)
        assert.isNull((yield* fetchTask(conn)).task)
        assert.strictEqual(
          yield* healthCheck(master.address, Credentials.insecureWithToken(wrongToken)),
          "PERMISSION_DENIED"
        )
      }),
    30_000
  )

  it.scopedLive(
    "files and options: a missing file, cert without key, key without cert, not PEM, a mismatched pair, a bad token",
    () =>
      Effect.gen(function*() {
        const certs = yield* Certs.make
        const absent = join(certs.directory, "absent.pem")
        const unreadable = yield* Effect.flip(credentials({ ca: absent }))
        assert.strictEqual(unreadable.reason, "Unreadable")
        assert.strictEqual(unreadable.path, absent)
        assert.include(unreadable.message, absent)

        const noKey = yield* Effect.flip(credentials({ ca: certs.ca.path, cert: certs.client.cert.path }))
        assert.deepStrictEqual([noKey.reason, noKey.option], ["MissingOption", "key"])
        assert.include(noKey.message, "without key")
        const noCert = yield* Effect.flip(credentials({ ca: certs.ca.path, key: certs.client.key.path }))
        assert.deepStrictEqual([noCert.reason, noCert.option], ["MissingOption", "cert"])

        const text = join(certs.directory, "not.pem")
        writeFileSync(text, "hello")
        const notPem = yield* Effect.flip(credentials({ ca: text }))
        assert.deepStrictEqual([notPem.reason, notPem.option, notPem.path], ["Invalid", "ca", text])

        const mismatched = yield* Effect.flip(
          credentials({ ca: certs.ca.path, cert: certs.client.cert.path, key: certs.server.key.path })
        )
        assert.strictEqual(mismatched.reason, "Invalid")

        const badMaster = yield* Effect.flip(
          Master.make({ tls: { cert: certs.server.cert.pem, key: certs.client.key.pem } })
        )
        assert.strictEqual(badMaster.reason, "InvalidOption")

        const badToken = yield* Effect.flip(credentials({ ca: certs.ca.path, token: Redacted.make("two words") }))
        assert.deepStrictEqual([badToken.reason, badToken.option], ["Invalid", "token"])
        assert.notInclude(badToken.message, "two words")
      }),
    30_000
  )

  it.scopedLive(
    "Config: the MASTER_* variables give the credentials; a bad value names its variable",
    () =>
      Effect.gen(function*() {
        const certs = yield* Certs.make
        const master = yield* Master.make({ tls: tlsOf(certs), token })
        const fromEnv = (env: Record<string, string>) =>
          Credentials.Credentials.pipe(
            Effect.provide(Credentials.layerConfig()),
            Effect.provide(NodeFileSystem.layer),
            Effect.withConfigProvider(Env.provider({ env }))
          )
        const creds = yield* fromEnv({ MASTER_CA_FILE: certs.ca.path, MASTER_TOKEN: Redacted.value(token) })
        assert.strictEqual(yield* healthCheck(master.address, creds), "SERVING")

        const options = yield* Env.read(Credentials.config).pipe(
          Effect.withConfigProvider(
            Env.provider({ env: { MASTER_CA_FILE: certs.ca.path, MASTER_TOKEN: Redacted.value(token) } })
          )
        )
        assert.isTrue(options.token !== undefined && Redacted.value(options.token) === Redacted.value(token))
        assert.notInclude(String(options.token), Redacted.value(token))

        const badTls = yield* Effect.flip(fromEnv({ MASTER_TLS: "maybe" }))
        assert.include(String(badTls), "MASTER_TLS")
        const badToken = yield* Effect.flip(fromEnv({ MASTER_TOKEN: "has a space" }))
        assert.include(String(badToken), "MASTER_TOKEN")
        assert.include(String(badToken), "expected a bearer token")
        assert.notInclude(String(badToken), "has a space")
        const badFlag = yield* Effect.flip(fromEnv({ MASTER_ALLOW_INSECURE_TOKEN: "si" }))
        assert.include(String(badFlag), "MASTER_ALLOW_INSECURE_TOKEN")
      }),
    30_000
  )

  it.scopedLive(
    "the token appears nowhere: not in logs, stdout, stderr, grpc-js's log or spans, through a restart and a refusal",
    () => {
      const lines: Array<string> = []
      const collect = Logger.make((options) => {
        lines.push(Logger.logfmtLogger.log(options))
        lines.push(Logger.stringLogger.log(options))
      })
      // Everything else a worker process can print: its stdout and stderr, and grpc-js's own logger at DEBUG (its
      // tracers stay off: GRPC_TRACE is read when grpc-js loads).
      const everyOutput = Effect.acquireRelease(
        Effect.sync(() => {
          const writes = [process.stdout.write, process.stderr.write] as const
          const capture = (stream: NodeJS.WriteStream, write: typeof stream.write) =>
            ((chunk: unknown, ...rest: Array<unknown>) => {
              lines.push(String(chunk))
              return (write as (...args: Array<unknown>) => boolean).call(stream, chunk, ...rest)
            }) as typeof stream.write
          process.stdout.write = capture(process.stdout, writes[0])
          process.stderr.write = capture(process.stderr, writes[1])
          grpc.setLogger({ error: (...args: Array<unknown>) => void lines.push(args.map(String).join(" ")) })
          grpc.setLogVerbosity(grpc.logVerbosity.DEBUG)
          return writes
        }),
        ([stdout, stderr]) =>
          Effect.sync(() => {
            process.stdout.write = stdout
            process.stderr.write = stderr
            // grpc-js's defaults: console, at GRPC_VERBOSITY (ERROR when unset).
            grpc.setLogger(console)
            const verbosity = process.env["GRPC_VERBOSITY"] as keyof typeof grpc.logVerbosity | undefined
            grpc.setLogVerbosity(grpc.logVerbosity[verbosity ?? "ERROR"] ?? grpc.logVerbosity.ERROR)
          })
      )
      // And every span, with its attributes and events, as an OpenTelemetry exporter would send them.
      const exporter = new InMemorySpanExporter()
      const tracing = NodeSdk.layer(() => ({ spanProcessor: new SimpleSpanProcessor(exporter) }))
      const Payload = Schema.Struct({ n: Schema.Number })
      const worker = (address: string, creds: grpc.ChannelCredentials, nodeKey: string) =>
        TaskHandler.layer({
          connection: MasterLink,
          payload: Payload,
          run: () => Effect.sleep("20 millis"),
          maxRunners: 4
        }).pipe(
          Layer.provideMerge(TaskSource.layer({ connection: MasterLink, nodeKey })),
          Layer.provideMerge(MasterLink.layer({
            address,
            credentials: creds,
            reconnectSchedule: Schedule.spaced("200 millis"),
            readiness: { interval: "100 millis", bound: "2 seconds", probeTimeout: "1 second" }
          })),
          Layer.provide(GrpcChannel.layer),
          Layer.provide(Outbox.layerMemory)
        )
      const finished = (master: Master.Master, n: number) =>
        eventually(
          master.tasks,
          (tasks) => tasks.filter((t) => t.status === "FINISHED").length >= n,
          "15 seconds",
          `${n} tasks finished`
        )
      return Effect.gen(function*() {
        yield* everyOutput
        const certs = yield* Certs.make
        const master = yield* Master.make({ tls: tlsOf(certs, true), token })
        for (let n = 0; n < 20; n++) yield* master.enqueue({ payload: JSON.stringify({ n }) })
        const files = { ca: certs.ca.path, cert: certs.client.cert.path, key: certs.client.key.path }
        yield* Effect.logDebug("credentials options", { ...files, token })

        const scope = yield* Scope.make()
        yield* Layer.buildWithScope(worker(master.address, yield* credentials({ ...files, token }), "w1"), scope)
        yield* finished(master, 5)
        // Failure path: the master goes away mid-run and comes back.
        yield* master.stop
        yield* Effect.sleep("1 second")
        yield* master.restart
        // And a worker with the wrong token is refused for a while beside it.
        const rejected = yield* Scope.make()
        const refusedWorker = yield* Effect.fork(
          Layer.buildWithScope(
            worker(master.address, yield* credentials({ ...files, token: wrongToken }), "w2"),
            rejected
          )
        )
        yield* finished(master, 20)
        // Past the refused worker's readiness bound, so its failure is logged too.
        yield* Effect.sleep("2500 millis")
        yield* Fiber.interrupt(refusedWorker)
        yield* Scope.close(rejected, Exit.void)
        yield* Scope.close(scope, Exit.void)

        const spans = exporter.getFinishedSpans()
        assert.isAbove(spans.length, 10, "spans were recorded")
        assert.isTrue(spans.some((span) => span.name === "Connection.reconnect"), "the restart is traced")
        for (const span of spans) {
          lines.push(JSON.stringify({ name: span.name, attributes: span.attributes, events: span.events }))
        }

        assert.isAbove(lines.length, 20, "log lines were captured")
        const all = lines.join("\n")
        assert.include(all, "connected to")
        assert.include(all, "connection lost")
        assert.include(all, "PERMISSION_DENIED")
        // The capture saw the line that holds the token itself (the options logged above, rendered redacted):
        // the absence checked next is the token's, not the line's.
        assert.include(all, "<redacted>")
        for (const secret of [token, wrongToken]) {
          assert.notInclude(all, Redacted.value(secret), "a token leaked into the logs")
        }
      }).pipe(
        Effect.provide(Layer.merge(Logger.replace(Logger.defaultLogger, collect), tracing)),
        Logger.withMinimumLogLevel(LogLevel.All)
      )
    },
    40_000
  )
})
