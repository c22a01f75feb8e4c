/**
 * The outbox of status reports. A report is persisted before `add` returns,
 * then delivered in order, one at a time, retried across disconnects for as
 * long as it takes, and removed once the master has it. The idempotency key of
 * a report never changes, so the master applies it once however often it
 * arrives. Backed by `@effect/platform`'s `KeyValueStore`: on the file system a
 * worker killed between finishing a task and reporting it reports it after the
 * restart.
 *
 * @since 0.1.0
 */
import * as grpc from "@grpc/grpc-js"
import * as KeyValueStore from "@effect/platform/KeyValueStore"
import type * as PlatformError from "@effect/platform/Error"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import * as Metrics from "./Metrics.js"
import * as Retry from "./Retry.js"
import type * as TaskSource from "./TaskSource.js"

/**
 * A report as it is stored.
 *
 * @since 0.1.0
 * @category schemas
 */
export const StoredReport = Schema.Struct({
  key: Schema.String,
  taskId: Schema.String,
  status: Schema.Literal("RUNNING", "FINISHED", "ERROR", "CANCELLED"),
  error: Schema.String
})

/**
 * The outbox could not be read at start.
 *
 * @since 0.1.0
 * @category errors
 */
export class OutboxError extends Data.TaggedError("OutboxError")<{
  readonly reason: "Unreadable"
  readonly message: string
  readonly cause: unknown
}> {}

/**
 * What the outbox has done so far.
 *
 * @since 0.1.0
 * @category models
 */
export interface OutboxStats {
  readonly delivered: number
  /** Reports the master refused for good (not transient): logged with their content, then dropped. */
  readonly rejected: number
  /** Delivery attempts that failed and were tried again. */
  readonly retries: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Outbox {
  /** Persists a report and queues it for delivery; a key already queued is not queued twice. */
  readonly add: (report: TaskSource.StatusReport) => Effect.Effect<void>
  /** The reports not delivered yet, oldest first. */
  readonly pending: Effect.Effect<ReadonlyArray<TaskSource.StatusReport>>
  /** How many reports wait, now and after every change. */
  readonly depth: Stream.Stream<number>
  readonly stats: Effect.Effect<OutboxStats>
  /** Waits until every report queued so far is delivered. */
  readonly flush: Effect.Effect<void>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Delivers one report to the master. */
  readonly deliver: (report: TaskSource.StatusReport) => Effect.Effect<void, TaskSource.Failure>
  /** The store key of the outbox. Default `"outbox"`. */
  readonly key?: string | undefined
  /** Spaces the retries of a report. Default: exponential from 500 ms, x2, capped at 10 s, jittered, forever. */
  readonly retry?: Schedule.Schedule<unknown, unknown> | undefined
}

const defaultRetry = Retry.backoff({ base: "500 millis", cap: "10 seconds" })

// The master says this report can never apply: only these drop it. Everything else is tried again.
const refusals: ReadonlySet<grpc.status> = new Set([
  grpc.status.INVALID_ARGUMENT,
  grpc.status.NOT_FOUND,
  grpc.status.FAILED_PRECONDITION,
  grpc.status.OUT_OF_RANGE,
  grpc.status.ALREADY_EXISTS,
  grpc.status.UNIMPLEMENTED
])

/**
 * Is a report that failed this way worth another try? Yes, unless the master
 * refused it for good: a lost report is worse than a late one.
 *
 * @since 0.1.0
 * @category classification
 */
export const tryAgain = (error: TaskSource.Failure): boolean =>
  error._tag === "GrpcError" ? !refusals.has(error.code) : error._tag !== "ClientUnavailable" || error.reason !== "Closed"

/**
 * An outbox over the `KeyValueStore` in context, delivering in a fiber of the
 * current scope.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<Outbox, OutboxError, KeyValueStore.KeyValueStore | Scope.Scope> =>
  Effect.gen(function*() {
    const key = options.key ?? "outbox"
    const kv = yield* KeyValueStore.KeyValueStore
    const store = kv.forSchema(Schema.Array(StoredReport))
    const log = Effect.annotateLogs({ module: "Outbox" })

    const loaded = yield* store.get(key).pipe(
      Effect.catchTag("ParseError", (error) =>
        // A damaged outbox is set aside for a person to read, never silently dropped.
        Effect.gen(function*() {
          const aside = `${key}.damaged-${yield* Clock.currentTimeMillis}`
          const raw = yield* kv.get(key)
          if (Option.isSome(raw)) yield* kv.set(aside, raw.value)
          yield* Effect.logError(`outbox ${key} is damaged, moved to ${aside}: ${error.message}`).pipe(log)
          return Option.none()
        })),
      Effect.mapError((cause) =>
        new OutboxError({ reason: "Unreadable", message: `cannot read outbox ${key}: ${cause.message}`, cause })
      )
    )
    const initial = Option.getOrElse(loaded, () => [])
    if (initial.length > 0) yield* Effect.logInfo(`outbox ${key}: ${initial.length} reports to deliver from before`).pipe(log)

    const queue = yield* SubscriptionRef.make<ReadonlyArray<TaskSource.StatusReport>>(initial)
    const stats = yield* Ref.make<OutboxStats>({ delivered: 0, rejected: 0, retries: 0 })

    // The store follows the queue; a failed write is logged and the report kept in memory.
    const persist = (reports: ReadonlyArray<TaskSource.StatusReport>) =>
      store.set(key, reports).pipe(
        Effect.catchAll((error) => Effect.logError(`outbox ${key} could not be written: ${error.message}`).pipe(log)),
        Effect.as(reports)
      )

    const add = (report: TaskSource.StatusReport) =>
      SubscriptionRef.updateEffect(queue, (reports) =>
        reports.some((r) => r.key === report.key) ? Effect.succeed(reports) : persist([...reports, report]))

    const remove = (report: TaskSource.StatusReport) =>
      SubscriptionRef.updateEffect(queue, (reports) => persist(reports.filter((r) => r.key !== report.key)))

    const deliverHead = Effect.gen(function*() {
      const head = yield* queue.changes.pipe(
        Stream.filterMap((reports) => Option.fromNullable(reports[0])),
        Stream.runHead,
        Effect.flatten
      )
      yield* options.deliver(head).pipe(
        Effect.tapError((error) =>
          tryAgain(error) ? Ref.update(stats, (s) => ({ ...s, retries: s.retries + 1 })) : Effect.void
        ),
        Effect.retry({ schedule: options.retry ?? defaultRetry, while: tryAgain }),
        Effect.matchEffect({
          onSuccess: () =>
            Effect.zipRight(Ref.update(stats, (s) => ({ ...s, delivered: s.delivered + 1 })), remove(head)),
          onFailure: (error) =>
            error._tag === "GrpcError"
              ? Effect.logError(
                `the master refused report ${head.key} (task ${head.taskId} ${head.status}) for good: ${error.message}`
              ).pipe(Effect.zipRight(Ref.update(stats, (s) => ({ ...s, rejected: s.rejected + 1 }))), Effect.zipRight(remove(head)))
              // The connection is closed: the report stays in the store for the next start.
              : Effect.never
        })
      )
    })

    yield* deliverHead.pipe(
      Effect.forever,
      log,
      Effect.annotateLogs({ fiber: "delivery" }),
      Effect.forkScoped,
      Effect.interruptible
    )

    yield* queue.changes.pipe(
      Stream.runForEach((reports) => Metric.set(Metrics.outboxDepth, reports.length)),
      Effect.forkScoped
    )

    return {
      add,
      pending: SubscriptionRef.get(queue),
      depth: queue.changes.pipe(Stream.map((reports) => reports.length), Stream.changes),
      stats: Ref.get(stats),
      flush: queue.changes.pipe(Stream.filter((reports) => reports.length === 0), Stream.runHead, Effect.asVoid)
    } satisfies Outbox
  })

/**
 * An outbox store on the file system, one file per outbox key in `directory`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerFileSystem = (
  directory: string
): Layer.Layer<KeyValueStore.KeyValueStore, PlatformError.PlatformError> =>
  KeyValueStore.layerFileSystem(directory).pipe(Layer.provide(Layer.merge(NodeFileSystem.layer, NodePath.layer)))

/**
 * An outbox store in memory, for tests.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemory: Layer.Layer<KeyValueStore.KeyValueStore> = KeyValueStore.layerMemory


/**
 * An outbox store on the file system, in the directory `OUTBOX_DIR` (default `.outbox`).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig: Layer.Layer<
  KeyValueStore.KeyValueStore,
  PlatformError.PlatformError | ConfigError.ConfigError
> = Layer.unwrapEffect(
  Effect.map(Config.withDefault(Config.nonEmptyString("OUTBOX_DIR"), ".outbox"), layerFileSystem)
)
