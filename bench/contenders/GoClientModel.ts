/**
 * Contender (c): a MODEL, in TypeScript, of the original Go worker's gRPC
 * client and task handler after the CLS-001 fix (the seed,
 * `/work/shared/seed/000_84218d139400e3c9.txt`, and DESIGN.md's "Defaults" and
 * "What the original Go implementation still gets wrong"). It is not the Go
 * code: it replays the Go algorithm, step by step and with its constants, over
 * a real grpc-js channel, so it meets the same fault proxy and master as the
 * other contenders. Mutable state and callbacks on purpose: it models
 * goroutines and mutex-guarded fields, not Effect code.
 *
 * Constants and where they come from (client.go is crawlab's
 * `core/grpc/client/client.go` as the seed describes it after the fix):
 *
 * | constant | value | source |
 * | --- | --- | --- |
 * | state monitor poll | 5 s | DESIGN ("state polled every 5 s"); client.go `stateMonitorInterval` |
 * | connect timeout of `doConnect` | 30 s | DESIGN ("original: 30 s"); client.go `connectionTimeout` |
 * | backoff after a failed reconnection | 1, 2, 4, 8, 16, 30 s, no jitter | seed; client.go `calculateBackoff` |
 * | forced retry after each backoff | a trigger on the reconnect channel | seed ("Secondary issue fixed") |
 * | stabilization sleep | 2 s | seed (`connectionStabilizationDelay`); DESIGN |
 * | readiness loop | every 500 ms, up to 30 s: READY + registered, no RPC | seed (`waitForFullReconnectionReady`); DESIGN item 1 |
 * | client lookup wait | 15 s, 90 s while `reconnecting`, fixed at the lookup's start | seed; DESIGN |
 * | registration poll of a lookup | 100 ms | client.go `registrationCheckInterval` |
 * | circuit breaker | opens after 5 failed reconnections, for 2 min; drops triggers while open | client.go; DESIGN item 5 |
 * | prolonged IDLE | reconnect only after 2 min IDLE and a failed health check | client.go `idleGracePeriod` |
 * | health check | every 2 min, 5 s timeout | client.go `healthCheckInterval`; DESIGN ("original: 2 min") |
 * | keepalive | ping every 20 s, 5 s timeout, also without calls | DESIGN; client.go `getDialOptions` |
 * | forced client reset | after 15 to 20 s not ready and registered (5 s watchdog, 15 s threshold), a new client outside `executeReconnection`, so `reconnecting` is false during its first connect | seed ("Force reset (after 20s wait)"); DESIGN ("15-20 s unready") |
 * | `Stop` of the old client | signals one goroutine on an unbuffered channel, then waits up to 10 s for all of them | client.go `Stop`; DESIGN item 4 |
 * | task handler | fetch tick 1 s (a Go ticker: a slow cycle delays, never overlaps), fetch timeout 15 s, startup wait for readiness up to 30 s | DESIGN; seed solution 3 |
 * | one fetch cycle | three RPCs: current node, runner count, `FetchTask`; each looks its client up first, under a deadline that started before the lookup | DESIGN items 3 and 10 |
 * | other calls' deadline | 10 s (`client.Context()`) | client.go `newGrpcClient` |
 *
 * What follows from the Go code and is modelled as such: a failed `doConnect`
 * leaves no connection object, after which the state monitor has nothing to
 * poll and nothing retries (DESIGN item 5) until the forced reset; IDLE after a
 * lost connection does not trigger a reconnection (only TRANSIENT_FAILURE and
 * SHUTDOWN do); the readiness loop passes at once once registered.
 *
 * Simplifications, each in the model's favour or neutral:
 * - The two model-service reads of a fetch cycle (`GetCurrentNode`, the runner
 *   count) are stood in for by `grpc.health.v1.Health/Check` on the master:
 *   the worker protocol has no such calls; the cost on loopback is the same.
 * - The task handler looks the client up through `GetGrpcClient()` on every
 *   cycle, so a forced reset's new client is used (a handler that kept the old
 *   client would never recover).
 * - `Register` is sent once per new client, without waiting for its answer
 *   (the seed's `register()`); no `Subscribe`.
 * - `grpc.use_local_subchannel_pool` is on, because a Go `ClientConn` never
 *   shares connections with another one, while grpc-js channels do by default.
 * - Which goroutine receives `Stop`'s single signal is drawn at random from
 *   those blocked on it, with a seeded generator.
 */
import * as grpc from "@grpc/grpc-js"
import * as Effect from "effect/Effect"
import { service as healthService } from "grpc-health-check"
import { setMaxListeners } from "node:events"
import { performance } from "node:perf_hooks"
import { WorkerProtocol } from "../../src/index.js"
import { seeded } from "../seeded.js"
import type { Contender } from "./Contender.js"

/** The model's constants, in milliseconds. */
export const constants = {
  stateMonitorInterval: 5_000,
  connectionTimeout: 30_000,
  backoffCap: 30_000,
  stabilization: 2_000,
  readinessInterval: 500,
  readinessBound: 30_000,
  lookupTimeout: 15_000,
  reconnectingLookupTimeout: 90_000,
  registrationCheckInterval: 100,
  breakerFailures: 5,
  breakerResetTime: 120_000,
  breakerHalfOpenRetry: 30_000,
  idleGracePeriod: 120_000,
  healthCheckInterval: 120_000,
  healthCheckTimeout: 5_000,
  testConnectionTimeout: 2_000,
  keepaliveTime: 20_000,
  keepaliveTimeout: 5_000,
  watchdogInterval: 5_000,
  forcedResetAfter: 15_000,
  stopGrace: 10_000,
  fetchInterval: 1_000,
  fetchTimeout: 15_000,
  callTimeout: 10_000,
  startupWait: 30_000
} as const

type State = "IDLE" | "CONNECTING" | "READY" | "TRANSIENT_FAILURE" | "SHUTDOWN"

const stateOf = (channel: grpc.Channel): State => grpc.connectivityState[channel.getConnectivityState(false)] as State

const now = () => performance.now()

const HealthClient = grpc.makeGenericClientConstructor(healthService, "Health")

// A Go `time.Sleep`: not interruptible by the client, only by the end of the process (the benchmark's teardown).
const sleep = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    if (signal.aborted || ms <= 0) return resolve()
    const onAbort = () => {
      clearTimeout(timer)
      resolve()
    }
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort)
      resolve()
    }, ms)
    signal.addEventListener("abort", onAbort, { once: true })
  })

// A Go `time.Ticker`: ticks on a fixed grid; one missed tick is kept in the channel's buffer, more are dropped.
class Ticker {
  nextAt: number
  constructor(private readonly period: number) {
    this.nextAt = now() + period
  }
  async tick(signal: AbortSignal): Promise<void> {
    const t = now()
    if (t >= this.nextAt) {
      this.nextAt += (Math.floor((t - this.nextAt) / this.period) + 1) * this.period
      return
    }
    await sleep(this.nextAt - t, signal)
    this.nextAt += this.period
  }
}

interface Counters {
  channelsDialed: number
  reconnectionsTriggered: number
  reconnectionsExecuted: number
  reconnectionsFailed: number
  breakerOpened: number
  triggersDroppedByBreaker: number
  forcedResets: number
  stopBlockedMs: number
  fetchCycles: number
  fetchCycleFailures: number
  lookupTimeouts: number
  fetched: number
}

interface Env {
  readonly address: string
  readonly nodeKey: string
  readonly started: (taskId: string) => void
  readonly log: (line: string) => void
  /** Aborted when the worker process ends (the benchmark's teardown). */
  readonly signal: AbortSignal
  readonly random: () => number
  /** Every channel ever opened, closed at teardown: a Go client may leak one, the benchmark may not. */
  readonly channels: Set<grpc.Channel>
  readonly counters: Counters
}

interface Clients {
  readonly task: WorkerProtocol.TaskServiceClient
  /** Stands in for `ModelBaseServiceClient`: its calls are `Health/Check`. */
  readonly modelBase: grpc.Client
}

const errorText = (error: unknown) => (error instanceof Error ? error.message : String(error))

// Runs a "goroutine": its failure is logged, never unhandled.
const go = (env: Env, name: string, body: () => Promise<void>) => {
  body().catch((error) => env.log(`${name}: ${errorText(error)}`))
}

const deadlineExceeded = () =>
  Object.assign(new Error("context deadline exceeded"), { code: grpc.status.DEADLINE_EXCEEDED })

/** A unary call under a deadline given as a `performance.now()` instant. */
const unary = <Res>(
  client: grpc.Client,
  method: string,
  request: unknown,
  deadlineAt: number
): Promise<Res> =>
  new Promise((resolve, reject) => {
    const remaining = deadlineAt - now()
    // A context already done fails the call before it is sent, as in Go.
    if (remaining <= 0) return reject(deadlineExceeded())
    type Method = (
      request: unknown,
      options: grpc.CallOptions,
      callback: (error: grpc.ServiceError | null, reply: Res) => void
    ) => grpc.ClientUnaryCall
    const call = (client as unknown as Record<string, Method>)[method]!
    call.call(
      client,
      request,
      { deadline: Date.now() + remaining },
      (error, reply) => (error ? reject(error) : resolve(reply))
    )
  })

/** The Go `GrpcClient`. */
class GrpcClient {
  private conn: grpc.Channel | undefined = undefined
  private clients: Clients | undefined = undefined
  private state: State = "IDLE"
  private reconnectQueued = false
  private wakeReconnect: (() => void) | undefined = undefined
  private reconnectHandlerBusy = false
  private reconnectHandlerStopped = false
  private monitorStopped = false
  private monitorTicker: Ticker | undefined = undefined
  private failureCount = 0
  private lastFailure = 0
  private registered = false
  private healthCheckEnabled = true
  reconnecting = false
  stopped = false

  constructor(private readonly env: Env) {}

  /** `Start`: connect (which starts the reconnection handler), then the state and health monitors. */
  async start(): Promise<void> {
    go(this.env, "handleReconnections", () => this.handleReconnections())
    try {
      await this.doConnect()
    } catch (error) {
      // "failed initial connection, will retry" -- but nothing triggers a retry.
      this.env.log(`failed initial connection, will retry: ${errorText(error)}`)
    }
    if (this.stopped || this.env.signal.aborted) return
    go(this.env, "monitorState", () => this.monitorState())
    go(this.env, "healthMonitor", () => this.healthMonitor())
  }

  /** `Stop`: one signal on the unbuffered stop channel, then up to 10 s for the goroutines, then close. */
  async stop(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    this.registered = false
    // The goroutines blocked on `<-c.stop` now; exactly one of them receives the signal.
    const listeners: Array<"reconnections" | "monitor" | "health"> = []
    if (!this.reconnectHandlerBusy) listeners.push("reconnections")
    if (this.monitorTicker !== undefined) listeners.push("monitor", "health")
    const receiver = listeners.length === 0 ? undefined : listeners[Math.floor(this.env.random() * listeners.length)]
    let blocked: number = constants.stopGrace
    if (receiver === "reconnections") {
      // The waitgroup also waits for the state monitor, which returns at its next tick (it checks `stopped`).
      blocked = this.monitorTicker === undefined ? 0 : Math.max(0, this.monitorTicker.nextAt - now())
    } else if (receiver === "monitor") {
      this.monitorStopped = true
    }
    this.env.counters.stopBlockedMs += blocked
    // Whatever of this client goes on running after Stop (a leaked goroutine) does nothing any more: end it here.
    this.reconnectHandlerStopped = true
    this.wakeReconnect?.()
    await sleep(blocked, this.env.signal)
    this.conn?.close()
  }

  isReady(): boolean {
    return this.conn !== undefined && stateOf(this.conn) === "READY"
  }

  isReadyAndRegistered(): boolean {
    return this.isReady() && this.registered
  }

  describe(): string {
    const conn = this.conn === undefined ? "no connection object" : `channel ${stateOf(this.conn)}`
    const breaker = this.breakerState()
    return `${conn}, registered ${this.registered}, reconnecting ${this.reconnecting}, ${this.failureCount} failed reconnections (breaker ${breaker})`
  }

  // ---------------------------------------------------------------------------------------------
  // Lookups: wait for registration, 15 s or 90 s fixed at the start, ignoring the caller's deadline.
  // ---------------------------------------------------------------------------------------------

  getTaskClient(): Promise<Clients> {
    return this.getClientWithContext(now() + this.lookupTimeout(), "task")
  }

  getModelBaseServiceClient(): Promise<Clients> {
    return this.getClientWithContext(now() + this.lookupTimeout(), "model base service")
  }

  private lookupTimeout(): number {
    return this.reconnecting ? constants.reconnectingLookupTimeout : constants.lookupTimeout
  }

  private async getClientWithContext(deadlineAt: number, kind: string): Promise<Clients> {
    if (this.stopped) throw new Error("grpc client is stopped")
    if (this.registered && this.clients !== undefined) return this.clients
    let isReconnecting = this.reconnecting
    while (!this.env.signal.aborted) {
      if (now() >= deadlineAt) {
        this.env.counters.lookupTimeouts++
        throw new Error(
          `context cancelled while waiting for ${kind} client registration${
            isReconnecting ? ": reconnection in progress, retry recommended" : ""
          }`
        )
      }
      // The registration ticker (100 ms) or the context's end, whichever comes first.
      await sleep(Math.min(constants.registrationCheckInterval, deadlineAt - now()), this.env.signal)
      if (this.stopped) throw new Error(`client stopped while waiting for ${kind} client registration`)
      isReconnecting = this.reconnecting
      if (this.registered && this.clients !== undefined) return this.clients
    }
    throw new Error("process ended")
  }

  // ---------------------------------------------------------------------------------------------
  // Connecting
  // ---------------------------------------------------------------------------------------------

  private async doConnect(): Promise<void> {
    this.registered = false
    if (this.conn !== undefined) {
      this.conn.close()
      this.conn = undefined
    }
    const conn = new grpc.Channel(this.env.address, grpc.credentials.createInsecure(), {
      "grpc.keepalive_time_ms": constants.keepaliveTime,
      "grpc.keepalive_timeout_ms": constants.keepaliveTimeout,
      "grpc.keepalive_permit_without_calls": 1,
      "grpc.use_local_subchannel_pool": 1
    })
    this.env.channels.add(conn)
    this.env.counters.channelsDialed++
    this.conn = conn
    conn.getConnectivityState(true)
    try {
      await this.waitForConnectionReady(conn, constants.connectionTimeout)
    } catch (error) {
      conn.close()
      if (this.conn === conn) this.conn = undefined
      throw error
    }
    this.register()
  }

  private waitForConnectionReady(conn: grpc.Channel, timeout: number): Promise<void> {
    const deadline = Date.now() + timeout
    return new Promise((resolve, reject) => {
      const check = () => {
        const state = stateOf(conn)
        if (state === "READY") return resolve()
        if (state === "TRANSIENT_FAILURE" || state === "SHUTDOWN") {
          return reject(new Error(`connection failed with state: ${state}`))
        }
        conn.watchConnectivityState(
          conn.getConnectivityState(false),
          deadline,
          (error) => error ? reject(new Error("connection timeout")) : check()
        )
      }
      check()
    })
  }

  private register(): void {
    const conn = this.conn
    if (conn === undefined) return
    const options = { channelOverride: conn }
    this.clients = {
      task: new WorkerProtocol.TaskServiceClient(this.env.address, grpc.credentials.createInsecure(), options),
      modelBase: new HealthClient(this.env.address, grpc.credentials.createInsecure(), options)
    }
    new WorkerProtocol.NodeServiceClient(this.env.address, grpc.credentials.createInsecure(), options).Register(
      { node_key: this.env.nodeKey, name: this.env.nodeKey, max_runners: 1, generation: 1 },
      (error) => {
        if (error) this.env.log(`register failed: ${error.message}`)
      }
    )
    this.healthCheckEnabled = true
    this.registered = true
  }

  // ---------------------------------------------------------------------------------------------
  // Reconnection
  // ---------------------------------------------------------------------------------------------

  private triggerReconnection(_reason: string): void {
    if (this.stopped) return
    if (this.breakerState() === "open") {
      this.env.counters.triggersDroppedByBreaker++
      return
    }
    this.env.counters.reconnectionsTriggered++
    this.queueReconnect()
  }

  // `select { case c.reconnect <- struct{}{}: default: }` on a channel buffered for one.
  private queueReconnect(): void {
    this.reconnectQueued = true
    const wake = this.wakeReconnect
    this.wakeReconnect = undefined
    wake?.()
  }

  private async handleReconnections(): Promise<void> {
    while (!this.env.signal.aborted) {
      if (!this.reconnectQueued) {
        const signal = this.env.signal
        await new Promise<void>((resolve) => {
          const onAbort = () => resolve()
          this.wakeReconnect = () => {
            signal.removeEventListener("abort", onAbort)
            resolve()
          }
          signal.addEventListener("abort", onAbort, { once: true })
        })
      }
      if (this.env.signal.aborted || this.reconnectHandlerStopped) return
      if (!this.reconnectQueued) continue
      this.reconnectQueued = false
      if (this.stopped || !this.canAttemptConnection()) {
        if (!this.stopped) this.env.counters.triggersDroppedByBreaker++
        continue
      }
      this.reconnectHandlerBusy = true
      try {
        await this.executeReconnection()
      } finally {
        this.reconnectHandlerBusy = false
      }
    }
  }

  private async executeReconnection(): Promise<void> {
    if (this.reconnecting) return
    this.reconnecting = true
    this.env.counters.reconnectionsExecuted++
    try {
      await this.doConnect()
    } catch (error) {
      this.env.log(`reconnection failed: ${errorText(error)}`)
      this.env.counters.reconnectionsFailed++
      this.recordFailure()
      this.reconnecting = false
      await sleep(this.calculateBackoff(), this.env.signal)
      // The seed's secondary fix: trigger another attempt after the backoff.
      this.queueReconnect()
      return
    }
    this.recordSuccess()
    await sleep(constants.stabilization, this.env.signal)
    await this.waitForFullReconnectionReady()
    this.reconnecting = false
  }

  // The readiness loop: READY, registered, and "service clients work", which makes no RPC.
  private async waitForFullReconnectionReady(): Promise<boolean> {
    const start = now()
    while (now() - start < constants.readinessBound && !this.env.signal.aborted) {
      if (this.conn === undefined || stateOf(this.conn) !== "READY" || !this.registered) {
        await sleep(constants.readinessInterval, this.env.signal)
        continue
      }
      try {
        const deadline = now() + 2_000
        await this.getClientWithContext(deadline, "model base service")
        await this.getClientWithContext(deadline, "task")
        return true
      } catch {
        await sleep(constants.readinessInterval, this.env.signal)
      }
    }
    return false
  }

  private breakerState(): "closed" | "open" | "half-open" {
    if (this.failureCount < constants.breakerFailures) return "closed"
    return now() - this.lastFailure > constants.breakerResetTime ? "half-open" : "open"
  }

  private canAttemptConnection(): boolean {
    switch (this.breakerState()) {
      case "closed":
        return true
      case "half-open":
        return now() - this.lastFailure > constants.breakerHalfOpenRetry
      case "open":
        return false
    }
  }

  private recordFailure(): void {
    this.failureCount++
    this.lastFailure = now()
    if (this.failureCount === constants.breakerFailures) this.env.counters.breakerOpened++
  }

  private recordSuccess(): void {
    this.failureCount = 0
    this.lastFailure = 0
  }

  // 1 << min(failures - 1, 5) seconds, capped at 30 s.
  private calculateBackoff(): number {
    return Math.min(2 ** Math.min(this.failureCount - 1, 5) * 1_000, constants.backoffCap)
  }

  // ---------------------------------------------------------------------------------------------
  // Monitors
  // ---------------------------------------------------------------------------------------------

  private async monitorState(): Promise<void> {
    const ticker = new Ticker(constants.stateMonitorInterval)
    this.monitorTicker = ticker
    let idleStart: number | undefined = undefined
    while (!this.env.signal.aborted) {
      await ticker.tick(this.env.signal)
      if (this.env.signal.aborted || this.monitorStopped || this.stopped) return
      const conn = this.conn
      if (conn === undefined) continue
      const previous = this.state
      const current = stateOf(conn)
      if (previous === current) {
        if (current === "IDLE" && idleStart !== undefined && now() - idleStart > constants.idleGracePeriod) {
          if (!(await this.testConnection())) {
            this.triggerReconnection("prolonged IDLE state with failed connection test")
          }
          idleStart = undefined
        }
        continue
      }
      this.state = current
      switch (current) {
        case "TRANSIENT_FAILURE":
          this.registered = false
          this.triggerReconnection(`state change to ${current}`)
          break
        case "SHUTDOWN":
          this.registered = false
          if (!this.stopped) this.triggerReconnection(`state change to ${current}`)
          break
        case "IDLE":
          if (previous === "READY") idleStart = now()
          break
        case "READY":
          idleStart = undefined
          this.recordSuccess()
          if (!this.registered) this.register()
          break
        case "CONNECTING":
          break
      }
    }
  }

  private async healthMonitor(): Promise<void> {
    const ticker = new Ticker(constants.healthCheckInterval)
    while (!this.env.signal.aborted) {
      await ticker.tick(this.env.signal)
      if (this.env.signal.aborted || this.stopped) return
      if (!this.isReady() || !this.registered || !this.healthCheckEnabled) continue
      const clients = this.clients
      if (clients === undefined) continue
      try {
        await unary(clients.modelBase, "check", { service: "" }, now() + constants.healthCheckTimeout)
      } catch (error) {
        if ((error as { code?: number }).code === grpc.status.UNIMPLEMENTED) {
          this.healthCheckEnabled = false
          continue
        }
        this.triggerReconnection("health check failure")
      }
    }
  }

  private async testConnection(): Promise<boolean> {
    if (!this.isReady() || !this.registered) return false
    const clients = this.clients
    if (!this.healthCheckEnabled || clients === undefined) return this.isReady()
    try {
      await unary(clients.modelBase, "check", { service: "" }, now() + constants.testConnectionTimeout)
      return true
    } catch {
      return false
    }
  }
}

/** The Go worker process: the global client with its forced reset, and the task handler. */
class GoWorker {
  private client: GrpcClient
  private resetting: Promise<void> | undefined = undefined
  private readonly runners = new Set<string>()

  constructor(private readonly env: Env) {
    this.client = new GrpcClient(env)
  }

  start(): void {
    go(this.env, "client.Start", () => this.client.start())
    go(this.env, "watchdog", () => this.watchdog())
    go(this.env, "taskHandler", () => this.taskHandler())
  }

  describe(): string {
    return `${this.client.describe()}; ${this.env.counters.forcedResets} forced resets so far`
  }

  // `GetGrpcClient()`: blocks while `ResetGrpcClient` holds the mutex.
  private async getGrpcClient(): Promise<GrpcClient> {
    while (this.resetting !== undefined) await this.resetting
    return this.client
  }

  // `ResetGrpcClient`: stop the old client (under the mutex), then a new one, started outside the reconnection path.
  private async resetGrpcClient(): Promise<void> {
    this.env.counters.forcedResets++
    this.resetting = (async () => {
      await this.client.stop()
      this.client = new GrpcClient(this.env)
      const fresh = this.client
      go(this.env, "client.Start", () => fresh.start())
    })()
    await this.resetting
    this.resetting = undefined
  }

  // The worker's forced reset: not ready and registered for 15 s, seen by a 5 s check, so 15 to 20 s.
  private async watchdog(): Promise<void> {
    const ticker = new Ticker(constants.watchdogInterval)
    let unreadySince: number | undefined = undefined
    while (!this.env.signal.aborted) {
      await ticker.tick(this.env.signal)
      if (this.env.signal.aborted) return
      const client = await this.getGrpcClient()
      if (client.isReadyAndRegistered()) {
        unreadySince = undefined
      } else if (unreadySince === undefined) {
        unreadySince = now()
      } else if (now() - unreadySince >= constants.forcedResetAfter) {
        this.env.log("gRPC client not ready, forcing a client reset")
        await this.resetGrpcClient()
        unreadySince = now()
      }
    }
  }

  private async taskHandler(): Promise<void> {
    const { signal } = this.env
    // Start: WaitForReady (a 1 s ticker, no bound), then the seed's solution 3: 500 ms polls up to 30 s.
    const ready = new Ticker(1_000)
    while (!signal.aborted && !(await this.getGrpcClient()).isReady()) await ready.tick(signal)
    const waitStart = now()
    while (!signal.aborted && !(await this.getGrpcClient()).isReadyAndRegistered()) {
      if (now() - waitStart > constants.startupWait) break
      await sleep(500, signal)
    }
    const ticker = new Ticker(constants.fetchInterval)
    while (!signal.aborted) {
      await ticker.tick(signal)
      if (signal.aborted) return
      this.env.counters.fetchCycles++
      try {
        await this.processFetchCycle()
      } catch (error) {
        this.env.counters.fetchCycleFailures++
        this.env.log(`fetch cycle error: ${errorText(error)}`)
      }
    }
  }

  // A model-service read: `client.Context()` (10 s) starts first, then the lookup waits, then the call gets what is left.
  private async modelRead(): Promise<void> {
    const deadline = now() + constants.callTimeout
    const client = await this.getGrpcClient()
    const clients = await client.getModelBaseServiceClient()
    await unary(clients.modelBase, "check", { service: "" }, deadline)
  }

  private async processFetchCycle(): Promise<void> {
    // GetCurrentNode: its failure ends the cycle.
    await this.modelRead()
    // getRunnerCount: its failure is logged and the count taken as 0.
    await this.modelRead().catch((error) => this.env.log(`failed to count tasks: ${errorText(error)}`))
    // fetchTask: a 15 s context, then the task client's lookup, then FetchTask.
    const deadline = now() + constants.fetchTimeout
    const client = await this.getGrpcClient()
    const clients = await client.getTaskClient()
    const reply = await unary<WorkerProtocol.FetchTaskReply>(
      clients.task,
      "FetchTask",
      { node_key: this.env.nodeKey },
      deadline
    )
    const task = reply.task
    if (task === null || task === undefined || task.id === "") return
    this.env.counters.fetched++
    this.runTask(task.id, clients)
  }

  private runTask(taskId: string, clients: Clients): void {
    if (this.runners.has(taskId)) return
    this.runners.add(taskId)
    this.env.started(taskId)
    for (const status of ["RUNNING", "FINISHED"] as const) {
      const request = { task_id: taskId, node_key: this.env.nodeKey, status, idempotency_key: `${taskId}:${status}` }
      unary(clients.task, "ReportStatus", request, now() + constants.callTimeout).catch((error) =>
        this.env.log(`report ${status} of ${taskId} failed: ${errorText(error)}`)
      )
    }
  }
}

/** Options of the model as a contender. */
export interface ModelOptions {
  /** Seeds the model's coin flips (which goroutine receives `Stop`'s signal). */
  readonly seed?: number | undefined
}

export const makeGoClientModel = (options: ModelOptions = {}): Contender => ({
  key: "go-model",
  name: "Go client model",
  start: ({ address, nodeKey, started, log }) =>
    Effect.map(
      Effect.acquireRelease(
        Effect.sync(() => {
          const abort = new AbortController()
          // Every goroutine of the model sleeps on this one signal: more than Node's default of 10 at once is normal.
          setMaxListeners(100, abort.signal)
          const env: Env = {
            address,
            nodeKey,
            started,
            log,
            signal: abort.signal,
            random: seeded(options.seed ?? 1),
            channels: new Set(),
            counters: {
              channelsDialed: 0,
              reconnectionsTriggered: 0,
              reconnectionsExecuted: 0,
              reconnectionsFailed: 0,
              breakerOpened: 0,
              triggersDroppedByBreaker: 0,
              forcedResets: 0,
              stopBlockedMs: 0,
              fetchCycles: 0,
              fetchCycleFailures: 0,
              lookupTimeouts: 0,
              fetched: 0
            }
          }
          const worker = new GoWorker(env)
          worker.start()
          return { abort, env, worker }
        }),
        ({ abort, env }) =>
          Effect.sync(() => {
            abort.abort()
            for (const channel of env.channels) channel.close()
          })
      ),
      ({ env, worker }) => ({
        describe: Effect.sync(() => worker.describe()),
        stats: Effect.sync(() => ({ ...env.counters }))
      })
    )
})
