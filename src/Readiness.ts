/**
 * Readiness: is a connection really usable? Three checks, each its own effect
 * with its own failure: the channel is READY, the service clients are
 * registered for this generation, and the master answers a real probe RPC.
 * `run` polls them every 500 ms until all pass, raced against a 30 s bound.
 *
 * `Connection` runs readiness after every (re)connect and stays `Connecting`
 * or `Reconnecting` until it passes; the `Readiness` service it provides lets
 * an HTTP readiness endpoint watch it, and a task handler add checks of its
 * own (`hold`).
 *
 * @since 0.1.0
 */
import * as grpc from "@grpc/grpc-js"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Equal from "effect/Equal"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import type * as HealthCheck from "grpc-health-check"
import type * as GrpcChannel from "./GrpcChannel.js"
import * as GrpcError from "./GrpcError.js"
import * as Cfg from "./internal/shared/config.js"
import { errorMessage } from "./internal/shared/format.js"
import { lazy } from "./internal/shared/lazy.js"
import { requireLazily } from "./internal/shared/runtime.js"
import * as Timeout from "./internal/shared/timeout.js"
import * as Validate from "./internal/shared/validate.js"
import type { InvalidOption } from "./InvalidOption.js"

/**
 * What readiness is checked on: one connection generation.
 *
 * @since 0.1.0
 * @category models
 */
export interface Target {
  readonly generation: number
  readonly channel: GrpcChannel.GrpcChannel
  /** The registered clients, by service key. */
  readonly clients: Readonly<Record<string, grpc.Client>>
  /** The service keys that must be registered. */
  readonly services: ReadonlyArray<string>
}

/**
 * Check 1 failed: the channel is not READY.
 *
 * @since 0.1.0
 * @category errors
 */
export class ChannelNotReady extends Data.TaggedError("ChannelNotReady")<{
  readonly state: GrpcChannel.ConnectivityState
}> {
  override get message() {
    return `channel is ${this.state}, not READY`
  }
}

/**
 * Is this a `ChannelNotReady`?
 *
 * @since 0.3.0
 * @category guards
 */
export const isChannelNotReady = (u: unknown): u is ChannelNotReady => Predicate.isTagged(u, "ChannelNotReady")

/**
 * Check 2 failed: some service clients are not registered for the generation.
 *
 * @since 0.1.0
 * @category errors
 */
export class NotRegistered extends Data.TaggedError("NotRegistered")<{
  readonly generation: number
  readonly missing: ReadonlyArray<string>
}> {
  override get message() {
    return `generation ${this.generation} has no client for ${this.missing.join(", ")}`
  }
}

/**
 * Is this a `NotRegistered`?
 *
 * @since 0.3.0
 * @category guards
 */
export const isNotRegistered = (u: unknown): u is NotRegistered => Predicate.isTagged(u, "NotRegistered")

/**
 * Check 3 failed: the master did not answer the probe.
 *
 * - `NotServing`: it answered that it is not serving.
 * - `Unavailable`: the call failed (transport error or any status but the answering ones).
 * - `Timeout`: no answer within the probe timeout.
 * - `Rejected`: the master refused the worker's credentials (UNAUTHENTICATED or
 *   PERMISSION_DENIED): no number of rounds will change that.
 *
 * @since 0.1.0
 * @category errors
 */
export class ProbeFailed extends Data.TaggedError("ProbeFailed")<{
  readonly reason: "NotServing" | "Unavailable" | "Timeout" | "Rejected"
  readonly message: string
  readonly code?: grpc.status | undefined
}> {}

/**
 * A probe: one real RPC that proves the master answers.
 *
 * @since 0.1.0
 * @category models
 */
export type Probe<R = never> = (target: Target) => Effect.Effect<void, ProbeFailed, R>

/**
 * The last result of one check.
 *
 * @since 0.1.0
 * @category models
 */
export type CheckResult = Data.TaggedEnum<{
  Pending: {}
  Passed: {}
  Failed: { readonly message: string }
}>

/**
 * @since 0.1.0
 * @category models
 */
export const CheckResult = Data.taggedEnum<CheckResult>()

/**
 * The connection's three checks, in the order they run.
 *
 * @since 0.3.0
 * @category models
 */
export type ConnectionCheck = "channel" | "registered" | "probe"

/**
 * The checks a worker holds readiness back on (see {@link Readiness}'s
 * `hold`): `tasks`, the task handler has started (its outbox is open) and can
 * store its reports; `member`, the master counts the node as a member. Listed
 * in the order they come: the node registers once the task handler runs.
 *
 * @since 0.3.0
 * @category models
 */
export type WorkerCheck = "tasks" | "member"

/**
 * The names of the checks, in the order a report lists them.
 *
 * @since 0.1.0
 * @category models
 */
export type CheckName = ConnectionCheck | WorkerCheck

/**
 * The last result of each check: the connection's always, a worker's while it holds readiness back on it.
 *
 * @since 0.3.0
 * @category models
 */
export type Checks =
  & { readonly [K in ConnectionCheck]: CheckResult }
  & { readonly [K in WorkerCheck]?: CheckResult }

/**
 * What readiness found: how long it took, how many rounds, the last result of
 * each check.
 *
 * @since 0.1.0
 * @category models
 */
export interface ReadinessReport {
  readonly generation: number
  readonly elapsed: Duration.Duration
  readonly rounds: number
  readonly checks: Checks
}

/**
 * Is this a `ProbeFailed`?
 *
 * @since 0.3.0
 * @category guards
 */
export const isProbeFailed = (u: unknown): u is ProbeFailed => Predicate.isTagged(u, "ProbeFailed")

/**
 * Every check name, in the order a report lists them.
 *
 * @since 0.3.0
 * @category constants
 */
export const checkNames: ReadonlyArray<CheckName> = ["channel", "registered", "probe", "tasks", "member"]

/**
 * The first check of a report that did not pass, if any.
 *
 * @since 0.1.0
 * @category getters
 */
export const failingCheck = (report: ReadinessReport): CheckName | undefined =>
  checkNames.find((name) => {
    const result = report.checks[name]
    return result !== undefined && result._tag !== "Passed"
  })

/**
 * A report line a person can read: `probe: Timeout after 2s`.
 *
 * @since 0.1.0
 * @category getters
 */
export const describeFailure = (report: ReadinessReport): string => {
  const name = failingCheck(report)
  if (name === undefined) return "all checks passed"
  const result = report.checks[name]
  return result?._tag === "Failed" ? `${name}: ${result.message}` : `${name}: not run`
}

/**
 * Readiness did not pass within its bound; the report says which check held it back.
 *
 * @since 0.1.0
 * @category errors
 */
export class ReadinessTimeout extends Data.TaggedError("ReadinessTimeout")<{
  readonly bound: Duration.Duration
  readonly report: ReadinessReport
}> {
  override get message() {
    return `readiness checks did not complete within ${Duration.format(this.bound)}: ${describeFailure(this.report)}`
  }
}

/**
 * Is this a `ReadinessTimeout`?
 *
 * @since 0.3.0
 * @category guards
 */
export const isReadinessTimeout = (u: unknown): u is ReadinessTimeout => Predicate.isTagged(u, "ReadinessTimeout")

/**
 * @since 0.1.0
 * @category models
 */
export interface Options<R = never> {
  /** Time between rounds. Default 500 ms. */
  readonly interval?: Duration.DurationInput | undefined
  /** Bound of the whole wait. Default 30 s. */
  readonly bound?: Duration.DurationInput | undefined
  /** Timeout of one probe RPC. Default 2 s. */
  readonly probeTimeout?: Duration.DurationInput | undefined
  /** The probe. Default: `grpc.health.v1.Health/Check` of the whole server (`healthProbe("")`). */
  readonly probe?: Probe<R> | undefined
  /**
   * While Ready, the probe runs this often to find a master that stopped
   * answering; a call on the connection answered within the interval proves
   * the link as well, and puts the next probe off to an interval after it.
   * Default 30 s.
   */
  readonly probeInterval?: Duration.DurationInput | undefined
}

/**
 * The defaults of {@link Options}.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaults = {
  interval: Duration.millis(500),
  bound: Duration.seconds(30),
  probeTimeout: Duration.seconds(2),
  probeInterval: Duration.seconds(30)
} as const

/**
 * The options, checked, with the defaults filled in; an error names the
 * option after `prefix` (`readiness.bound`, as `Connection.layer` has it).
 *
 * @since 0.2.0
 * @category validation
 */
export const validate = <R>(
  options: Options<R>,
  prefix = ""
): Effect.Effect<
  {
    readonly interval: Duration.Duration
    readonly bound: Duration.Duration
    readonly probeTimeout: Duration.Duration
    readonly probeInterval: Duration.Duration
    readonly probe: Probe<R>
  },
  InvalidOption
> =>
  Effect.gen(function*() {
    const duration = (name: keyof typeof defaults) =>
      Validate.positiveDuration(`${prefix}${name}`, options[name], defaults[name])
    return {
      interval: yield* duration("interval"),
      bound: yield* duration("bound"),
      probeTimeout: yield* duration("probeTimeout"),
      probeInterval: yield* duration("probeInterval"),
      probe: options.probe ?? (healthProbe() as Probe<R>)
    }
  })

/**
 * Check 1: the channel is READY.
 *
 * @since 0.1.0
 * @category checks
 */
export const channelReady = (target: Target): Effect.Effect<void, ChannelNotReady> =>
  Effect.flatMap(
    target.channel.state,
    (state) => state === "READY" ? Effect.void : Effect.fail(new ChannelNotReady({ state }))
  )

/**
 * Check 2: every service has its client for this generation.
 *
 * @since 0.1.0
 * @category checks
 */
export const registered = (target: Target): Effect.Effect<void, NotRegistered> =>
  Effect.suspend(() => {
    const missing = target.services.filter((key) => target.clients[key] === undefined)
    return missing.length === 0
      ? Effect.void
      : Effect.fail(new NotRegistered({ generation: target.generation, missing }))
  })

// grpc-health-check loads its proto when imported: on the first probe, not at import.
const HealthClient = lazy(() =>
  grpc.makeGenericClientConstructor((requireLazily("grpc-health-check") as typeof HealthCheck).service, "Health")
)

/**
 * A probe over the standard gRPC health protocol: `Health/Check` for the given
 * service name (`""` is the whole server). SERVING passes; NOT_SERVING and
 * UNKNOWN fail; a master without a health service (UNIMPLEMENTED) or without
 * a status for the name (NOT_FOUND) has answered, and passes.
 *
 * @since 0.1.0
 * @category probes
 */
export const healthProbe = (service = ""): Probe => (target) =>
  Effect.async<void, ProbeFailed>((resume) => {
    const client = new (HealthClient())(target.channel.target, grpc.credentials.createInsecure(), {
      channelOverride: target.channel.channel
    })
    const onReply = (error: grpc.ServiceError | null, reply?: { status?: string }) => {
      if (error === null) {
        resume(
          reply?.status === "SERVING"
            ? Effect.void
            : Effect.fail(
              new ProbeFailed({ reason: "NotServing", message: `health status ${reply?.status ?? "missing"}` })
            )
        )
      } else if (error.code === grpc.status.UNIMPLEMENTED || error.code === grpc.status.NOT_FOUND) {
        resume(Effect.void)
      } else if (GrpcError.isRejection(error.code)) {
        resume(
          Effect.fail(
            new ProbeFailed({
              reason: "Rejected",
              code: error.code,
              message: `${grpc.status[error.code]}: ${error.details}`
            })
          )
        )
      } else {
        resume(
          Effect.fail(
            new ProbeFailed({
              reason: "Unavailable",
              code: error.code,
              message: `${grpc.status[error.code]}: ${error.details}`
            })
          )
        )
      }
    }
    try {
      const call = client["check"]!({ service }, onReply) as grpc.ClientUnaryCall
      return Effect.sync(() => call.cancel())
    } catch (error) {
      // A channel that cannot carry calls (the simulated one) fails the probe instead of the fiber.
      resume(Effect.fail(new ProbeFailed({ reason: "Unavailable", message: String(error) })))
    }
  })

/**
 * Check 3: the probe answers within the timeout.
 *
 * @since 0.1.0
 * @category checks
 */
export const answers = <R>(
  target: Target,
  probe: Probe<R>,
  timeout: Duration.DurationInput
): Effect.Effect<void, ProbeFailed, R> =>
  // The failure is carried out of the timed race as a value: nothing fails inside it. A probe answered at once
  // (a simulated master) arms no timer. A probe that dies (a bug in one of your own) has failed, and says how: it
  // must not end the supervisor that runs it.
  Timeout.timeoutOption(
    Effect.either(Effect.catchAllDefect(probe(target), (defect) =>
      Effect.fail(new ProbeFailed({ reason: "Unavailable", message: `the probe died: ${errorMessage(defect)}` })))),
    timeout
  ).pipe(
    Effect.flatMap(Option.match({
      onNone: () =>
        Effect.fail(new ProbeFailed({ reason: "Timeout", message: `no answer within ${Duration.format(timeout)}` })),
      onSome: (answer) =>
        answer
    }))
  )

const toResult = <E extends { readonly message: string }, R>(
  check: Effect.Effect<void, E, R>
): Effect.Effect<CheckResult, never, R> =>
  Effect.match(check, {
    onFailure: (error) => CheckResult.Failed({ message: error.message }),
    onSuccess: () => CheckResult.Passed()
  })

/**
 * A report before any round has run.
 *
 * @since 0.1.0
 * @category constructors
 */
export const pending = (generation: number): ReadinessReport => ({
  generation,
  elapsed: Duration.zero,
  rounds: 0,
  checks: { channel: CheckResult.Pending(), registered: CheckResult.Pending(), probe: CheckResult.Pending() }
})

const passed = (report: ReadinessReport) => failingCheck(report) === undefined

/**
 * Runs the three checks in rounds, every `interval`, until all pass, within
 * `bound`. Returns at once when the first round passes: no stabilization
 * sleep. `onRound` sees every round's report. A probe that the master rejects
 * (the worker's credentials) ends it at once with that `ProbeFailed`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const run = <R, R2 = never>(
  target: Target,
  options: {
    readonly interval: Duration.DurationInput
    readonly bound: Duration.DurationInput
    readonly probeTimeout: Duration.DurationInput
    readonly probe: Probe<R>
    readonly onRound?: ((report: ReadinessReport) => Effect.Effect<void, never, R2>) | undefined
  }
): Effect.Effect<ReadinessReport, ReadinessTimeout | ProbeFailed, R | R2> =>
  Effect.gen(function*() {
    const start = yield* Clock.currentTimeMillis
    const last = yield* Ref.make(pending(target.generation))
    // `Effect.repeat` returns the schedule's output, not the round's: the rejection is kept aside.
    const rejection = yield* Ref.make<ProbeFailed | undefined>(undefined)
    // One round; a rejection of the worker's credentials ends the rounds: no number of them changes it.
    const round = Effect.gen(function*() {
      const channel = yield* toResult(channelReady(target))
      const registration = yield* toResult(registered(target))
      // No probe over a channel that is not READY: it could only fail, slower.
      const answer = channel._tag === "Passed" && registration._tag === "Passed"
        ? yield* Effect.either(answers(target, options.probe, options.probeTimeout))
        : undefined
      const probe = answer === undefined
        ? CheckResult.Pending()
        : answer._tag === "Right"
        ? CheckResult.Passed()
        : CheckResult.Failed({ message: answer.left.message })
      const now = yield* Clock.currentTimeMillis
      const previous = yield* Ref.get(last)
      const report: ReadinessReport = {
        generation: target.generation,
        elapsed: Duration.millis(now - start),
        rounds: previous.rounds + 1,
        checks: { channel, registered: registration, probe: probe._tag === "Pending" ? previous.checks.probe : probe }
      }
      yield* Ref.set(last, report)
      if (options.onRound) yield* options.onRound(report)
      if (answer?._tag === "Left" && answer.left.reason === "Rejected") yield* Ref.set(rejection, answer.left)
      return passed(report) || (answer?._tag === "Left" && answer.left.reason === "Rejected")
    })
    // A first round that passes at once (a simulated master) arms no timer for the bound.
    const outcome = yield* Timeout.timeoutOption(
      Effect.repeat(round, { schedule: Schedule.fixed(options.interval), until: (done) => done }),
      options.bound
    )
    const rejected = yield* Ref.get(rejection)
    if (rejected !== undefined) return yield* rejected
    const report = yield* Ref.get(last)
    if (Option.isSome(outcome)) return report
    return yield* new ReadinessTimeout({
      bound: Duration.decode(options.bound),
      report: { ...report, elapsed: Duration.millis((yield* Clock.currentTimeMillis) - start) }
    })
  })

/**
 * Readiness now: ready or not, with the last report.
 *
 * @since 0.1.0
 * @category models
 */
export interface ReadinessStatus {
  readonly ready: boolean
  readonly report: ReadinessReport
}

/**
 * The readiness of the connection, provided by `Connection.layer`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Readiness {
  /** Readiness now. */
  readonly status: Effect.Effect<ReadinessStatus>
  /** Readiness now, then every change: each round, each loss. */
  readonly changes: Stream.Stream<ReadinessStatus>
  /** Waits until ready, up to the bound; fails with the last report. */
  readonly await: Effect.Effect<ReadinessReport, ReadinessTimeout>
  /**
   * Holds readiness back on a check of the worker's own for as long as the
   * scope: the connection is not ready until the check passes. Returns the
   * check's setter. Two holders of one name (two task handlers) both have to
   * pass.
   *
   * @since 0.3.0
   */
  readonly hold: (
    name: WorkerCheck,
    initial: CheckResult
  ) => Effect.Effect<(result: CheckResult) => Effect.Effect<void>, never, Scope.Scope>
}

/**
 * @since 0.1.0
 * @category tags
 */
export const Readiness: Context.TagClass<Readiness, "effect-grpc-resilience/Readiness", Readiness> = Context.Tag(
  "effect-grpc-resilience/Readiness"
)<Readiness, Readiness>()

interface Held {
  readonly id: number
  readonly name: WorkerCheck
  readonly result: CheckResult
}

// Of two holders of one check, the one further from passing speaks for it.
const severity = { Passed: 0, Pending: 1, Failed: 2 } as const

// The connection's status with the worker's checks: ready when the connection is and every held check passed.
const withHeld = (status: ReadinessStatus, held: ReadonlyArray<Held>): ReadinessStatus => {
  if (held.length === 0) return status
  const checks: { -readonly [K in WorkerCheck]?: CheckResult } = {}
  for (const { name, result } of held) {
    const other = checks[name]
    if (other === undefined || severity[result._tag] > severity[other._tag]) checks[name] = result
  }
  return {
    ready: status.ready && held.every(({ result }) => result._tag === "Passed"),
    report: { ...status.report, checks: { ...status.report.checks, ...checks } }
  }
}

/**
 * The readiness a connection publishes: `status` now with the checks held by
 * the worker, its `changes`, and `await` up to `bound`.
 *
 * @since 0.2.0
 * @category constructors
 */
export const fromStatus = (
  connection: SubscriptionRef.SubscriptionRef<ReadinessStatus>,
  bound: Duration.Duration
): Effect.Effect<Readiness> =>
  Effect.gen(function*() {
    const held = yield* SubscriptionRef.make<ReadonlyArray<Held>>([])
    const ids = yield* Ref.make(0)
    const status = Effect.zipWith(SubscriptionRef.get(connection), SubscriptionRef.get(held), withHeld)
    const changes = Stream.zipLatest(connection.changes, held.changes).pipe(
      Stream.map(([status, held]) => withHeld(status, held))
    )
    // A result the check already has is no change, and wakes nobody: a holder that says the same again (Pending once
    // more during a reconnection) costs the watchers of the readiness nothing.
    const set = (id: number, result: CheckResult) =>
      Effect.flatMap(
        SubscriptionRef.get(held),
        (all) =>
          all.some((h) => h.id === id && !Equal.equals(h.result, result))
            ? SubscriptionRef.update(held, (all) => all.map((h) => (h.id === id ? { ...h, result } : h)))
            : Effect.void
      )
    return Readiness.of({
      status,
      changes,
      await: changes.pipe(
        Stream.filter((s) => s.ready),
        Stream.runHead,
        Effect.timeoutOption(bound),
        Effect.flatMap((ready) =>
          Option.isSome(ready) && Option.isSome(ready.value)
            ? Effect.succeed(ready.value.value.report)
            : Effect.flatMap(status, ({ report }) => Effect.fail(new ReadinessTimeout({ bound, report })))
        )
      ),
      hold: (name, initial) =>
        Effect.acquireRelease(
          Effect.flatMap(
            Ref.updateAndGet(ids, (n) => n + 1),
            (id) => Effect.as(SubscriptionRef.update(held, (all) => [...all, { id, name, result: initial }]), id)
          ),
          (id) => SubscriptionRef.update(held, (all) => all.filter((h) => h.id !== id))
        ).pipe(Effect.map((id) => (result: CheckResult) => set(id, result)))
    })
  })

const awaitReady: Effect.Effect<ReadinessReport, ReadinessTimeout, Readiness> = Effect.flatMap(
  Readiness,
  (readiness) => readiness.await
)

export {
  /**
   * Waits until the connection is ready, up to the readiness bound (30 s).
   *
   * @since 0.1.0
   * @category accessors
   */
  awaitReady as await
}

/**
 * The readiness options as `Config` reads them, each optional: `readinessInterval`, `readinessBound`,
 * `probeTimeout`, `probeInterval` and `probeService` (the health service name the default probe checks); in the
 * environment `READINESS_INTERVAL`, ... A record: spread it to override one.
 *
 * @since 0.1.0
 * @category config
 */
export const config = {
  interval: Cfg.optional(Cfg.duration("readinessInterval", "The time between readiness rounds.")),
  bound: Cfg.optional(Cfg.duration("readinessBound", "The bound of the wait for readiness.")),
  probeTimeout: Cfg.optional(Cfg.duration("probeTimeout", "One probe's timeout.")),
  probeInterval: Cfg.optional(Cfg.duration("probeInterval", "How often the probe runs while ready.")),
  probe: Cfg.optional(
    Config.map(
      Config.withDescription(
        Config.string("probeService"),
        "The health service name the probe checks (empty: the whole server)."
      ),
      healthProbe
    )
  )
} satisfies Config.Config.Wrap<Options>
