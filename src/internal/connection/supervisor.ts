/**
 * The supervisor of a connection: one fiber in the connection's scope that
 * keeps one link to the master. It dials a channel, waits for READY within the
 * connect timeout, registers the service clients of a new generation, runs the
 * readiness checks, watches the Ready link (its channel, the periodic probe
 * unless a call answered since the last one, checks asked for), and on a loss starts over on the reconnect schedule; a
 * refusal of the worker's credentials waits on the slow schedule instead. It
 * publishes the state and the Ready link; `Connection` answers lookups and
 * calls from them.
 *
 * Over 400 lines, as one concept: the attempt, the watch of a Ready link and
 * the reconnect loop write one state and share the outage's bookkeeping (its
 * start, the warning already given, whether its master was refusing); the
 * lookup wait, which only reads the state, is `lookup.ts`.
 *
 * @internal
 */
import type * as grpc from "@grpc/grpc-js"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import * as Call from "../../Call.js"
import { ConnectError, ConnectionState, describe } from "../../ConnectionState.js"
import * as GrpcChannel from "../../GrpcChannel.js"
import type * as GrpcError from "../../GrpcError.js"
import * as Metrics from "../../Metrics.js"
import * as Readiness from "../../Readiness.js"
import * as Retry from "../../Retry.js"
import { errorMessage, formatMillis } from "../shared/format.js"
import { retrying } from "../shared/retrying.js"
import * as Stepper from "../shared/stepper.js"

/** One connection generation: its channel, its clients, and the scope that closes them. */
export interface Link extends Readiness.Target {
  readonly scope: Scope.CloseableScope
  /** Fires when the link is given up: calls still running on it fail at once instead of hanging on. */
  readonly lost: Call.GivenUp
}

/** What the supervisor publishes: the state, and the link while Ready. */
export interface Snapshot {
  readonly state: ConnectionState
  readonly link: Link | undefined
}

/** A grpc-js client constructor; `Connection.ClientConstructor` is this. */
export type ClientConstructor<C extends grpc.Client = grpc.Client> = new(
  address: string,
  credentials: grpc.ChannelCredentials,
  options?: grpc.ClientOptions
) => C

/** The client constructors to register, by key; `Connection.Services` is this. */
export type Services = Readonly<Record<string, ClientConstructor<grpc.Client>>>

/** The supervisor's options, checked by `Connection.make`. */
export interface Options {
  readonly address: string
  readonly services: Services
  readonly credentials: grpc.ChannelCredentials
  readonly channelOptions: grpc.ChannelOptions
  readonly connectTimeout: Duration.Duration
  readonly readiness: {
    readonly interval: Duration.Duration
    readonly bound: Duration.Duration
    readonly probeTimeout: Duration.Duration
    readonly probeInterval: Duration.Duration
  }
  /** With its requirements provided. */
  readonly probe: Readiness.Probe
  readonly reconnectSchedule: Schedule.Schedule<unknown, ConnectError>
  readonly rejectedSchedule: Schedule.Schedule<unknown, ConnectError>
}

/** The supervisor's side that `Connection` reads and signals. */
export interface Supervisor {
  /** The state and the Ready link, then every change. */
  readonly snapshot: SubscriptionRef.SubscriptionRef<Snapshot>
  /**
   * The same, published only when the link or the state's tag changes: not on
   * every attempt of a reconnection. For what waits for a link (a lookup, the
   * streams opened on each generation): attempt after attempt of an outage
   * wakes none of them.
   */
  readonly links: SubscriptionRef.SubscriptionRef<Snapshot>
  /** The readiness status. */
  readonly status: SubscriptionRef.SubscriptionRef<Readiness.ReadinessStatus>
  /** Asks for a check of the Ready link now; coalesced. */
  readonly check: Effect.Effect<void>
  /** The master refused a call for the worker's credentials. */
  readonly reject: (error: GrpcError.GrpcError) => Effect.Effect<void>
  /** The master answered a call on the link of `generation`: proof enough of the link for one probe interval. */
  readonly answered: (generation: number) => Effect.Effect<void>
}

const stateNames = ["Connecting", "Ready", "Reconnecting", "Rejected", "Closed"] as const

const isReconnecting = ConnectionState.$is("Reconnecting")

// How long the same failure, attempt after attempt, is logged at debug level after its warning.
const repeatWarningAfter = 30_000

// In an outage that has had a cheap failure (the master refused: it was down, and is coming back), a connection the
// master has accepted gets this many connect timeouts to finish its handshake: a master coming back is busy, and every
// handshake given up is work it did for nothing and a connection more to come. An outage of timeouts alone (a
// blackhole, a lost link) keeps the plain connect timeout.
const handshakePatience = 3

// Where a connecting channel settles by `deadline`: READY, TRANSIENT_FAILURE or SHUTDOWN, or `undefined` when it
// has not; an IDLE one is asked to connect. Step by step rather than as a stream in a timed race: attempts a few
// hundred milliseconds apart are worth a millisecond less each.
const settled = (
  channel: GrpcChannel.GrpcChannel,
  deadline: number
): Effect.Effect<GrpcChannel.ConnectivityState | undefined> =>
  Effect.flatMap(
    channel.state,
    (first) =>
      Effect.iterate<GrpcChannel.ConnectivityState | undefined, never, never>(first, {
        while: (state) =>
          state !== undefined && state !== "READY" && state !== "TRANSIENT_FAILURE" && state !== "SHUTDOWN",
        body: (state) =>
          Effect.zipRight(state === "IDLE" ? channel.connect : Effect.void, channel.next(state!, deadline))
      })
  )

// grpc-js's "No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:9666 (<time>).
// Resolution note: " is, in a log line, "connect ECONNREFUSED 127.0.0.1:9666".
const lastError = (detail: string): string => {
  const last = /Last error: ([\s\S]*?)\. Resolution note:/.exec(detail)?.[1] ?? detail
  return last.replace(/^Error(?: \[[A-Z_]+\])?: /, "").replace(/ \(\d{4}-\d\d-\d\dT[\d:.]+Z\)$/, "").replace(
    /\s+/g,
    " "
  ).trim()
}

const failureWords: Record<GrpcChannel.FailureReason, string> = {
  Refused: "connection refused",
  HostUnreachable: "host unreachable",
  NameNotResolved: "name not resolved",
  TlsRefused: "TLS handshake refused",
  Unrecognized: "channel in TRANSIENT_FAILURE"
}

const stageWords: Record<GrpcChannel.Stage, string> = {
  Resolve: "the name did not resolve",
  Connect: "TCP never answered",
  Handshake: "the HTTP/2 handshake never finished",
  Unknown: "no answer"
}

/** A channel's failure, read from it once, as the attempt's error. */
const failed = (failure: GrpcChannel.Failure): ConnectError =>
  new ConnectError({
    reason: failure.reason === "Unrecognized" ? "TransientFailure" : failure.reason,
    message: `${failureWords[failure.reason]}: ${lastError(failure.detail)}`,
    detail: failure.detail
  })

// A probe the master refused for the worker's credentials: a rejection, during readiness or while Ready.
const refusedBy = (probe: Readiness.ProbeFailed): ConnectError =>
  new ConnectError({ reason: "Rejected", message: probe.message, cause: probe })

/** An attempt that was not READY within the connect timeout, and how far it got. */
const timedOut = (stage: GrpcChannel.Stage, connectTimeout: Duration.Duration): ConnectError =>
  new ConnectError({
    reason: "ConnectTimeout",
    message: `not READY within ${formatMillis(connectTimeout)}: ${stageWords[stage]}`,
    stage
  })

// READY within the connect timeout, or the reason why not, read from the channel once. `patient`: a master that
// accepted the TCP connection gets `patience` in all to finish the HTTP/2 handshake.
const awaitReady = (
  channel: GrpcChannel.GrpcChannel,
  connectTimeout: Duration.Duration,
  patient: boolean
): Effect.Effect<void, ConnectError> =>
  Effect.gen(function*() {
    const start = yield* Clock.currentTimeMillis
    let state = yield* settled(channel, start + Duration.toMillis(connectTimeout))
    if (state === undefined) {
      const stage = yield* channel.stage
      if (!patient || stage !== "Handshake") return yield* Effect.fail(timedOut(stage, connectTimeout))
      state = yield* settled(channel, start + Duration.toMillis(connectTimeout) * handshakePatience)
      if (state === undefined) {
        return yield* Effect.fail(timedOut(yield* channel.stage, Duration.times(connectTimeout, handshakePatience)))
      }
    }
    switch (state) {
      case "READY":
        return
      case "TRANSIENT_FAILURE":
        return yield* Effect.fail(failed(yield* channel.failure))
      default:
        return yield* Effect.fail(new ConnectError({ reason: "Shutdown", message: "channel shut down" }))
    }
  })

// The readiness report after a loss: the check that saw it failed.
const lostReport = (report: Readiness.ReadinessReport, lost: ConnectError): Readiness.ReadinessReport => ({
  ...report,
  checks: {
    ...report.checks,
    // The probe's own failures, a refusal of the worker's credentials among them; anything else was the channel.
    [Readiness.isProbeFailed(lost.cause) ? "probe" : "channel"]: Readiness.CheckResult.Failed({ message: lost.message })
  }
})

const sameChecks = (a: Readiness.ReadinessReport, b: Readiness.ReadinessReport) =>
  (["channel", "registered", "probe"] as const).every((name) => {
    const [x, y] = [a.checks[name], b.checks[name]]
    return x._tag === y._tag && (x._tag !== "Failed" || (y._tag === "Failed" && x.message === y.message))
  })

/**
 * Starts the supervisor in the current scope. When the scope closes, the
 * supervisor is interrupted, the link's channel closed, and the state is
 * `Closed`.
 */
export const start = (options: Options): Effect.Effect<Supervisor, never, GrpcChannel.Dialer | Scope.Scope> =>
  Effect.gen(function*() {
    const { address, connectTimeout, credentials, probe, readiness, services } = options
    const schedule = options.reconnectSchedule
    const rejectedSchedule = options.rejectedSchedule
    const serviceKeys = Object.keys(services)
    const dialer = yield* GrpcChannel.Dialer
    const layerScope = yield* Effect.scope

    const initial: Snapshot = { state: ConnectionState.Connecting({ attempt: 1 }), link: undefined }
    const snapshot = yield* SubscriptionRef.make<Snapshot>(initial)
    const links = yield* SubscriptionRef.make<Snapshot>(initial)
    let published = initial
    const status = yield* SubscriptionRef.make<Readiness.ReadinessStatus>({
      ready: false,
      report: Readiness.pending(1)
    })
    const checks = yield* Effect.acquireRelease(Queue.sliding<void>(1), Queue.shutdown)
    // Calls the master refused for the worker's credentials, for the supervisor to act on.
    const rejections = yield* Effect.acquireRelease(Queue.sliding<GrpcError.GrpcError>(1), Queue.shutdown)
    const rejectedDelays = yield* Stepper.make(rejectedSchedule)
    // The state gauge moves only with the state's tag: not on every attempt of a reconnection.
    let gauged: ConnectionState["_tag"] | undefined
    const setState = (state: ConnectionState, link?: Link) =>
      Effect.suspend(() => {
        const next: Snapshot = { state, link }
        const moved = published.link !== link || published.state._tag !== state._tag
        if (moved) published = next
        return SubscriptionRef.set(snapshot, next).pipe(
          Effect.zipRight(moved ? SubscriptionRef.set(links, next) : Effect.void),
          Effect.zipRight(
            gauged === state._tag ? Effect.void : Effect.suspend(() => {
              gauged = state._tag
              return Metrics.oneHot(Metrics.connectionState, stateNames, state._tag)
            })
          )
        )
      })
    const currentState = Effect.map(SubscriptionRef.get(snapshot), (s) => s.state)

    // One attempt: a new channel, READY within the connect timeout, the clients of a new generation, readiness.
    const attempt = (generation: number): Effect.Effect<Link, ConnectError> =>
      Effect.gen(function*() {
        const scope = yield* Scope.fork(layerScope, ExecutionStrategy.sequential)
        return yield* Effect.gen(function*() {
          const channel = yield* Scope.extend(
            dialer.dial({ address, credentials, channelOptions: options.channelOptions }),
            scope
          )
          yield* channel.connect
          yield* Metric.increment(Metrics.connectionAttempts)
          yield* awaitReady(channel, connectTimeout, refusedInOutage)
          const readyAt = yield* Clock.currentTimeMillis
          const clients: Record<string, grpc.Client> = {}
          for (const [key, constructor] of Object.entries(services)) {
            clients[key] = new constructor(address, credentials, { channelOverride: channel.channel })
          }
          const lost = new Call.GivenUp()
          yield* Scope.addFinalizer(scope, Effect.sync(() => lost.fire()))
          const link: Link = { generation, channel, clients, services: serviceKeys, scope, lost }
          yield* Metric.update(Metrics.registrationSeconds, ((yield* Clock.currentTimeMillis) - readyAt) / 1000)
          const which = isReconnecting(yield* currentState) ? "reconnection " : ""
          yield* Effect.logInfo(`waiting for full ${which}readiness`)
          const report = yield* Readiness.run(link, {
            ...readiness,
            probe,
            onRound: (report) => SubscriptionRef.set(status, { ready: false, report })
          }).pipe(
            Effect.withSpan("Readiness.run", { attributes: { generation }, captureStackTrace: false }),
            Effect.catchTags({
              ReadinessTimeout: (timeout) =>
                Effect.logWarning(
                  `${which}readiness checks did not complete within ${formatMillis(timeout.bound)}: ${
                    Readiness.describeFailure(timeout.report)
                  }`
                ).pipe(
                  Effect.zipRight(Metric.increment(Metrics.readinessTimeouts)),
                  Effect.zipRight(Effect.fail(
                    new ConnectError({
                      reason: "NotReady",
                      message: timeout.message,
                      check: Readiness.failingCheck(timeout.report),
                      cause: timeout
                    })
                  ))
                ),
              ProbeFailed: (rejected) => Effect.fail(refusedBy(rejected))
            })
          )
          yield* Metric.update(Metrics.readinessSeconds, Duration.toSeconds(report.elapsed))
          yield* Effect.logInfo(`full ${which}readiness achieved after ${formatMillis(report.elapsed)}`)
          return link
        }).pipe(Effect.onExit((exit) => Exit.isSuccess(exit) ? Effect.void : Scope.close(scope, exit)))
      }).pipe(Effect.withSpan("Connection.attempt", { attributes: { address, generation }, captureStackTrace: false }))

    // The last call the master answered, and on which generation's link.
    let lastAnswer: { readonly generation: number; readonly at: number } | undefined
    const probeInterval = Duration.toMillis(readiness.probeInterval)

    // The last attempt's failure logged as a warning, so a long outage of one kind is not a warning a second.
    let warned: { readonly reason: string; readonly at: number } | undefined
    // Whether this outage has had a cheap failure: its master was refusing, so an accepted connection gets patience.
    let refusedInOutage = false
    // When the attempt under way started: the line of a reconnection says how long the one that succeeded took.
    let attemptStartedAt = 0

    // Attempts until one succeeds, spaced by the schedule; each failure moves the state to Reconnecting.
    const establish = (generation: number): Effect.Effect<Link, ConnectError> =>
      Effect.gen(function*() {
        const state = yield* currentState
        attemptStartedAt = yield* Clock.currentTimeMillis
        const line = `connecting to ${address} (${describe(state)})`
        // The first attempt of a (re)connection at info level; the ones after it have their failure's line.
        yield* ("attempt" in state && state.attempt > 1 ? Effect.logDebug(line) : Effect.logInfo(line))
        return yield* attempt(generation)
      }).pipe(
        retrying({
          schedule,
          // A rejection is not retried here: the supervisor waits on the slow schedule.
          while: (error: ConnectError) => error.reason !== "Rejected",
          // Not after the last failure: no attempt follows it, and the supervisor says what happens instead.
          onRetry: (error, delay) =>
            Effect.gen(function*() {
              const now = yield* Clock.currentTimeMillis
              const state = yield* currentState
              const failedAttempt = "attempt" in state ? state.attempt : 0
              if (Retry.reconnectCost(error) === "Cheap") refusedInOutage = true
              const next = ConnectionState.Reconnecting({
                attempt: failedAttempt + 1,
                since: ConnectionState.$is("Reconnecting")(state) ? state.since : now,
                lastError: error
              })
              yield* setState(next)
              // An attempt that never reached readiness says why in the report an HTTP readiness probe shows;
              // the same words again are no change, and wake nobody.
              if (error.reason !== "NotReady") {
                const { report } = yield* SubscriptionRef.get(status)
                // The generation being established has checks of its own: the last one's passed long ago.
                const updated = lostReport(
                  report.generation === generation ? report : Readiness.pending(generation),
                  error
                )
                if (!sameChecks(report, updated)) yield* SubscriptionRef.set(status, { ready: false, report: updated })
              }
              const line =
                `connection attempt ${failedAttempt} failed (${error.reason}: ${error.message}); attempt ${next.attempt} in ${
                  formatMillis(delay)
                }`
              // Every attempt has its line; the same failure again within 30 s is at debug level.
              if (warned === undefined || warned.reason !== error.reason || now - warned.at >= repeatWarningAfter) {
                warned = { reason: error.reason, at: now }
                yield* Effect.logWarning(line)
              } else {
                yield* Effect.logDebug(line)
              }
            })
        })
      )

    // Is a Ready link still usable? Its channel is READY and the master answers the probe.
    const verify = (link: Link): Effect.Effect<void, ConnectError> =>
      Readiness.channelReady(link).pipe(
        Effect.mapError((error) =>
          new ConnectError({ reason: "Lost", message: `check found the ${error.message}`, cause: error })
        ),
        Effect.zipRight(
          Readiness.answers(link, probe, readiness.probeTimeout).pipe(
            // A probe refused for the worker's credentials is a rejection, as it is during readiness.
            Effect.mapError((error) =>
              error.reason === "Rejected"
                ? refusedBy(error)
                : new ConnectError({
                  reason: "ProbeFailed",
                  message: `probe ${error.reason}: ${error.message}`,
                  cause: error
                })
            )
          )
        )
      )

    // While Ready: the first sign of loss, from the channel, the periodic probe, or a requested check.
    const watch = (link: Link): Effect.Effect<ConnectError> => {
      const leftReady = link.channel.changes.pipe(
        Stream.filter((state) => state !== "READY"),
        Stream.runHead,
        Effect.map((state) =>
          new ConnectError({
            reason: "Lost",
            message: `channel left READY for ${Option.getOrElse(state, () => "SHUTDOWN")}`
          })
        )
      )
      // The probe is due a probe interval after the last proof that the master answers on this link: its own last
      // probe, or a call answered since. A requested check is due at once.
      const due = Effect.gen(function*() {
        let wait = probeInterval
        while (true) {
          const asked = yield* Effect.raceFirst(
            Effect.as(Queue.take(checks), true),
            Effect.as(Effect.sleep(wait), false)
          )
          if (asked) return
          const now = yield* Clock.currentTimeMillis
          const answer = lastAnswer
          if (answer === undefined || answer.generation !== link.generation || now - answer.at >= probeInterval) return
          wait = answer.at + probeInterval - now
        }
      })
      const probed = due.pipe(
        Effect.zipRight(verify(link)),
        Effect.forever,
        Effect.flip
      )
      const refused = Effect.map(
        Queue.take(rejections),
        (error) =>
          new ConnectError({
            reason: "Rejected",
            message: `${error.service}.${error.method}: ${error.message}`,
            cause: error
          })
      )
      return Effect.raceFirst(leftReady, Effect.raceFirst(probed, refused))
    }

    // The master refused the worker's credentials: no lookups, no hammering; the next try after the slow schedule.
    const rejected = (error: ConnectError) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const delay = yield* rejectedDelays.next(error)
        if (Option.isNone(delay)) return yield* Effect.fail(error)
        const retryAt = now + delay.value
        yield* setState(ConnectionState.Rejected({ since: now, retryAt, lastError: error }))
        yield* Effect.logError(
          `the master refused this worker's credentials (${error.message}); next try in ${formatMillis(retryAt - now)}`
        )
        yield* Effect.sleep(retryAt - now)
        yield* setState(ConnectionState.Reconnecting({ attempt: 1, since: now, lastError: error }))
      })

    const supervise = Effect.gen(function*() {
      let generation = 1
      while (true) {
        // One trace per (re)connection: its attempts and readiness rounds are children of this span.
        const established = yield* Effect.either(
          establish(generation).pipe(
            Effect.withSpan(generation === 1 ? "Connection.connect" : "Connection.reconnect", {
              root: true,
              attributes: { address, generation },
              captureStackTrace: false
            })
          )
        )
        if (established._tag === "Left") {
          if (established.left.reason !== "Rejected") return yield* established.left
          yield* rejected(established.left)
          continue
        }
        const link = established.right
        warned = undefined
        refusedInOutage = false
        const since = yield* Clock.currentTimeMillis
        const before = yield* currentState
        yield* Queue.takeAll(checks)
        yield* Queue.takeAll(rejections)
        yield* rejectedDelays.reset
        yield* setState(ConnectionState.Ready({ generation, since }), link)
        yield* Metric.increment(Metrics.connectionSuccesses)
        yield* Metric.set(Metrics.connectionGeneration, generation)
        yield* SubscriptionRef.update(status, ({ report }) => ({ ready: true, report }))
        yield* Effect.logInfo(
          ConnectionState.$is("Reconnecting")(before)
            ? `connected to ${address} again, generation ${generation}, after an outage of ${
              formatMillis(since - before.since)
            } and ${before.attempt} attempts; the last took ${formatMillis(since - attemptStartedAt)} to be ready`
            : `connected to ${address}, generation ${generation}`
        )
        const lost = yield* watch(link)
        yield* SubscriptionRef.update(status, ({ report }) => ({ ready: false, report: lostReport(report, lost) }))
        generation++
        if (lost.reason === "Rejected") {
          yield* Scope.close(link.scope, Exit.void)
          yield* rejected(lost)
          continue
        }
        yield* Effect.logWarning(`connection lost (${lost.message}); reconnecting`)
        yield* setState(
          ConnectionState.Reconnecting({ attempt: 1, since: yield* Clock.currentTimeMillis, lastError: lost })
        )
        yield* Scope.close(link.scope, Exit.void)
      }
    }).pipe(
      Effect.catchAll((error) =>
        Effect.logError(`reconnect schedule gave up (${error.reason}: ${error.message}); connection closed`).pipe(
          Effect.zipRight(setState(ConnectionState.Closed({ lastError: error })))
        )
      ),
      // A defect (a bug: ours, or a client constructor or schedule of the app's that throws) ends the supervisor.
      // Closed says so at once, readiness fails, and lookups fail: a connection stuck in Reconnecting would hide it.
      // The connection does not come back: the process must be restarted, which a readiness probe tells its host.
      Effect.catchAllDefect((defect) => {
        const lastError = new ConnectError({
          reason: "Shutdown",
          message: `the supervisor died: ${errorMessage(defect)}`
        })
        return Effect.logError("the connection's supervisor died; connection closed", Cause.die(defect)).pipe(
          Effect.zipRight(setState(ConnectionState.Closed({ lastError }))),
          Effect.zipRight(SubscriptionRef.update(status, ({ report }) => ({ ready: false, report })))
        )
      }),
      Effect.annotateLogs({ module: "Connection", fiber: "supervisor", address })
    )

    // Added before the supervisor is forked, so it runs after the supervisor is interrupted.
    yield* Effect.addFinalizer(() =>
      Effect.flatMap(currentState, (state) =>
        Effect.zipRight(
          setState(ConnectionState.Closed({ lastError: "lastError" in state ? state.lastError : undefined })),
          SubscriptionRef.update(status, ({ report }) => ({ ready: false, report }))
        ))
    )
    yield* Effect.forkScoped(supervise)

    return {
      snapshot,
      links,
      status,
      check: Queue.offer(checks, undefined).pipe(Effect.asVoid),
      reject: (error) => Queue.offer(rejections, error).pipe(Effect.asVoid),
      answered: (generation) =>
        Effect.map(Clock.currentTimeMillis, (at) => {
          lastAnswer = { generation, at }
        })
    } satisfies Supervisor
  })
