/**
 * The connection to the master: a supervisor fiber in the layer's scope keeps
 * one link (`internal/connection/supervisor.ts`: connect, readiness, loss, reconnection
 * on a `Schedule`); the connection answers client lookups from the state it
 * publishes, and makes resilient calls and streams on the current generation.
 *
 * @since 0.1.0
 */
import * as grpc from "@grpc/grpc-js"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import type * as Tracer from "effect/Tracer"
import * as Breaker from "./Breaker.js"
import * as Call from "./Call.js"
import { ClientUnavailable, ConnectError, ConnectionState } from "./ConnectionState.js"
import * as Credentials from "./Credentials.js"
import * as GrpcChannel from "./GrpcChannel.js"
import * as GrpcError from "./GrpcError.js"
import * as Lookup from "./internal/connection/lookup.js"
import * as Supervisor from "./internal/connection/supervisor.js"
import * as Cfg from "./internal/shared/config.js"
import * as LogLines from "./internal/shared/logLines.js"
import * as Validate from "./internal/shared/validate.js"
import { InvalidOption } from "./InvalidOption.js"
import * as Metrics from "./Metrics.js"
import * as Readiness from "./Readiness.js"
import * as Retry from "./Retry.js"

/**
 * A grpc-js client constructor, as `makeGenericClientConstructor`,
 * `loadPackageDefinition` or generated code give them.
 *
 * @since 0.1.0
 * @category models
 */
export type ClientConstructor<C extends grpc.Client = grpc.Client> = Supervisor.ClientConstructor<C>

/**
 * The service clients a connection registers, by the key they are looked up with.
 *
 * @since 0.1.0
 * @category models
 */
export type Services = Supervisor.Services

/**
 * @since 0.1.0
 * @category models
 */
export interface Options<S extends Services = Services, R = never> {
  /** The master's address: `host:port`, `[v6]:port`, or a gRPC target URI (`dns:`, `unix:`, `ipv4:`...). */
  readonly address: string
  /** The service clients to register on each connection, by lookup key. */
  readonly services: S
  /** Default: the `Credentials.Credentials` service when one is in context, else insecure. */
  readonly credentials?: grpc.ChannelCredentials | undefined
  /**
   * Merged over `GrpcChannel.defaultChannelOptions`. After the master ended a
   * connection with GOAWAY too_many_pings, the next channels ping less often
   * than `grpc.keepalive_time_ms` says (`GrpcChannel.rememberKeepalive`).
   */
  readonly channelOptions?: grpc.ChannelOptions | undefined
  /** Spaces failed attempts; its input is the attempt's error. Default `Retry.reconnect`. */
  readonly reconnectSchedule?: Schedule.Schedule<unknown, ConnectError> | undefined
  /**
   * How long one attempt may wait for READY. Default 3 s: on the links this
   * library is for, a connect that is not READY in 3 s is dead (a blackholed
   * handshake), and every second it hangs is a second added to recovery. Raise
   * it for slow links.
   */
  readonly connectTimeout?: Duration.DurationInput | undefined
  /** How long a lookup waits while not reconnecting. Default 15 s. */
  readonly lookupTimeout?: Duration.DurationInput | undefined
  /** How long a lookup waits while reconnecting. Default 90 s. */
  readonly reconnectingLookupTimeout?: Duration.DurationInput | undefined
  /** The readiness checks run after every (re)connect, and the probe while Ready. */
  readonly readiness?: Readiness.Options<R> | undefined
  /** Retries a lookup that timed out. Default `Retry.lookup`: 3 attempts, 2 s apart. */
  readonly lookupSchedule?: Schedule.Schedule<unknown, unknown> | undefined
  /** Retries a call that failed transiently. Default `Retry.call`. */
  readonly callSchedule?: Schedule.Schedule<unknown, unknown> | undefined
  /** Deadline of one call attempt, unless the call says otherwise. Default 10 s. */
  readonly callTimeout?: Duration.DurationInput | undefined
  /** The circuit breaker the calls go through. */
  readonly breaker?: Breaker.Options | undefined
  /**
   * Spaces the tries after the master refused the worker's credentials
   * (UNAUTHENTICATED, PERMISSION_DENIED): slowly, not to hammer it. Default
   * exponential from 30 s, x2, capped at 5 minutes, jittered.
   */
  readonly rejectedSchedule?: Schedule.Schedule<unknown, ConnectError> | undefined
}

/**
 * What one resilient call is made with. The connection gives a call up itself, at once, when its generation is
 * lost.
 *
 * @since 0.1.0
 * @category models
 */
export interface CallOptions extends Omit<Call.CallOptions, "givenUp"> {
  /** Repeating the call has no further effect: it may be retried after any transient failure. */
  readonly idempotent?: boolean | undefined
  /**
   * Replaces the connection's call schedule for this call; `false` sends it once (its client lookup is still
   * retried, on the lookup schedule).
   */
  readonly retry?: Schedule.Schedule<unknown, unknown> | false | undefined
}

/**
 * The shape of the default `rejectedSchedule`: `Retry.backoff` from 30 s, capped at 5 minutes.
 *
 * @since 0.1.0
 * @category constants
 */
export const rejectedBackoff = { base: Duration.seconds(30), cap: Duration.minutes(5) } as const

/**
 * The defaults of {@link Options}.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaults = {
  connectTimeout: Duration.seconds(3),
  lookupTimeout: Duration.seconds(15),
  reconnectingLookupTimeout: Duration.seconds(90),
  reconnectSchedule: Retry.reconnect,
  lookupSchedule: Retry.lookup,
  callSchedule: Retry.call,
  callTimeout: Duration.seconds(10),
  rejectedSchedule: Retry.backoff(rejectedBackoff) as Schedule.Schedule<unknown, ConnectError>
} as const

/**
 * The connection to the master.
 *
 * @since 0.1.0
 * @category models
 */
export interface Connection<S extends Services = Services> {
  readonly address: string
  /** The current state. */
  readonly state: Effect.Effect<ConnectionState>
  /** The current state, then every change: each attempt of a reconnection among them. */
  readonly changes: Stream.Stream<ConnectionState>
  /**
   * The current state (in an outage, the state it began with), then each
   * change of its kind (`_tag`) or of the Ready generation: the connection
   * Ready, lost, Rejected, Closed; not the attempts of a reconnection, so an
   * outage of any length is one element (with the `attempt` and `lastError` it
   * began with). For what waits on the kind alone, as the task handler does:
   * an hour's outage of 240 attempts wakes it once. `state` has the attempt
   * under way.
   *
   * @since 0.3.0
   */
  readonly transitions: Stream.Stream<ConnectionState>
  /**
   * The client of the current generation: at once when the connection is
   * `Ready`, else after waiting for it, up to the lookup wait of the state.
   */
  readonly client: <K extends keyof S & string>(key: K) => Effect.Effect<InstanceType<S[K]>, ClientUnavailable>
  /**
   * Asks the supervisor to check the connection now. Coalesced: while a
   * reconnection runs it is a no-op, and a healthy READY channel is kept.
   */
  readonly check: Effect.Effect<void>
  /** The constructors the connection registers, by key. */
  readonly services: S
  /** The readiness of the connection (also provided as `Readiness.Readiness` by the layers). */
  readonly readiness: Readiness.Readiness
  /**
   * A unary call on the current generation's client: the lookup is retried
   * (`lookupSchedule`), each attempt has a deadline and goes through the
   * breaker, and a transient failure is retried on the call schedule when the
   * call is idempotent or the request was never sent. Interrupting the effect
   * cancels the grpc-js call.
   */
  readonly call: <K extends keyof S & string, M extends Call.UnaryMethod<InstanceType<S[K]>>>(
    service: K,
    method: M,
    request: Call.Request<InstanceType<S[K]>, M>,
    options?: CallOptions
  ) => Effect.Effect<
    Call.Response<InstanceType<S[K]>, M>,
    GrpcError.GrpcError | ClientUnavailable | Breaker.BreakerOpen
  >
  /**
   * A server-streaming call that is opened on every connection generation:
   * messages of each generation's stream, in order, until the connection
   * closes. Within a generation it is opened again when the server ends it or
   * it fails transiently (after 100 ms, growing to 5 s); any other failure ends
   * it. `request` may depend on the generation (a subscription keyed by node
   * and generation).
   */
  readonly stream: <K extends keyof S & string, M extends Call.StreamMethod<InstanceType<S[K]>>>(
    service: K,
    method: M,
    request: Call.Request<InstanceType<S[K]>, M> | ((generation: number) => Call.Request<InstanceType<S[K]>, M>),
    options?: Omit<Call.CallOptions, "givenUp">
  ) => Stream.Stream<Call.Message<InstanceType<S[K]>, M>, GrpcError.GrpcError>
  /**
   * For every connection generation, the stream `open(generation)` gives:
   * opened when the generation is `Ready`, opened again on `reopen` (default
   * from 100 ms, growing to 5 s) when it ends while the generation lasts,
   * replaced by the next generation's, ended when the connection closes. A
   * failure ends the whole stream: catch inside `open` the ones to outlive.
   */
  readonly eachGeneration: <A, E, R>(
    open: (generation: number) => Stream.Stream<A, E, R>,
    reopen?: Schedule.Schedule<unknown, unknown> | undefined
  ) => Stream.Stream<A, E, R>
  /** The breaker the calls go through. */
  readonly breaker: Breaker.Breaker
}

/**
 * @since 0.1.0
 * @category tags
 */
export const Connection: Context.TagClass<Connection, "effect-grpc-resilience/Connection", Connection> = Context.Tag(
  "effect-grpc-resilience/Connection"
)<Connection, Connection>()

// Re-opening a stream within one generation: soon, then less often.
const streamReopen = Retry.backoff({ base: "100 millis", cap: "5 seconds" })

// The same state again, for a subscriber: the same kind and fields, the error the same one. Not `Equal`: it would hash
// the error, and the error `Effect.fail` carries its span in is a Proxy whose keys make V8 format its stack.
const sameState = (a: ConnectionState, b: ConnectionState): boolean =>
  a === b ||
  (a._tag === b._tag &&
    Object.keys(a).every((key) => (a as Record<string, unknown>)[key] === (b as Record<string, unknown>)[key]))

// Effect's built-in tracer keeps spans nobody reads, at about 8 us each: calls are traced only when a real
// tracer (OpenTelemetry, ...) is installed. Attempts and readiness, being rare, always are. The built-in one is
// what the default runtime runs with, read at the first call, not at import.
let nativeTracer: Tracer.Tracer | undefined
const isNativeTracer = (tracer: Tracer.Tracer): boolean => tracer === (nativeTracer ??= Effect.runSync(Effect.tracer))

const validServices = <S extends Services>(services: S): Effect.Effect<S, InvalidOption> => {
  if (services === null || typeof services !== "object") {
    return Effect.fail(new InvalidOption({ option: "services", reason: "expected a record of client constructors" }))
  }
  for (const [key, constructor] of Object.entries(services)) {
    if (typeof constructor !== "function") {
      return Effect.fail(new InvalidOption({ option: `services.${key}`, reason: "not a grpc-js client constructor" }))
    }
  }
  return Effect.succeed(services)
}

/**
 * Builds a connection in the current scope and starts its supervisor. Where
 * the standard output is not a terminal, it puts Effect's one-line logger in
 * place of `NodeRuntime.runMain`'s pretty one, for its scope and the layers
 * built on it (a logger of your own is left alone; see docs/operations.md).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <S extends Services, R = never>(
  options: Options<S, R>
): Effect.Effect<Connection<S>, InvalidOption, GrpcChannel.Dialer | Scope.Scope | R> =>
  Effect.gen(function*() {
    yield* LogLines.oneLineUnlessTerminal
    const address = yield* Validate.address("address", options.address)
    const services = yield* validServices(options.services)
    const connectTimeout = yield* Validate.positiveDuration(
      "connectTimeout",
      options.connectTimeout,
      defaults.connectTimeout
    )
    const lookupTimeout = yield* Validate.positiveDuration(
      "lookupTimeout",
      options.lookupTimeout,
      defaults.lookupTimeout
    )
    const reconnectingLookupTimeout = yield* Validate.positiveDuration(
      "reconnectingLookupTimeout",
      options.reconnectingLookupTimeout,
      defaults.reconnectingLookupTimeout
    )
    const { probe: userProbe, ...readiness } = yield* Readiness.validate(options.readiness ?? {}, "readiness.")
    // The probe's requirements are captured here, so the supervisor needs nothing from its callers.
    const context = yield* Effect.context<R>()
    const probe: Readiness.Probe = (target) => Effect.provide(userProbe(target), context)
    const lookupSchedule = options.lookupSchedule ?? defaults.lookupSchedule
    const callSchedule = options.callSchedule ?? defaults.callSchedule
    const callTimeout = yield* Validate.positiveDuration("callTimeout", options.callTimeout, defaults.callTimeout)
    // Every metric of this connection carries its master's address: two connections are two series.
    const labelled = Effect.tagMetrics("address", address)
    yield* labelled(Metrics.atZero(Metrics.connectionSeries))
    const breaker = yield* labelled(Breaker.make(options.breaker))
    // Given credentials first, then a Credentials layer in context (TLS, a token), else insecure.
    const credentials = options.credentials ??
      Option.getOrUndefined(yield* Effect.serviceOption(Credentials.Credentials)) ??
      grpc.credentials.createInsecure()
    // One memory per connection: the longer keepalive a master asked for (too_many_pings) outlives the channel.
    const withDialer = Effect.provideService(
      GrpcChannel.Dialer,
      yield* GrpcChannel.rememberKeepalive(yield* GrpcChannel.Dialer)
    )
    const supervisor = yield* withDialer(labelled(Supervisor.start({
      address,
      services,
      credentials,
      channelOptions: options.channelOptions ?? {},
      connectTimeout,
      readiness,
      probe,
      reconnectSchedule: options.reconnectSchedule ?? defaults.reconnectSchedule,
      rejectedSchedule: options.rejectedSchedule ?? defaults.rejectedSchedule
    })))
    const { check, links, snapshot, status } = supervisor
    const currentState = Effect.map(SubscriptionRef.get(snapshot), (s) => s.state)

    // The link of the current generation, for a service: at once when Ready, else after a wait that follows the state.
    const lookup = (key: string) =>
      Lookup.link({ snapshot, links, services, lookupTimeout, reconnectingLookupTimeout, waiting: labelled }, key)

    const client = <K extends keyof S & string>(key: K) =>
      Effect.map(lookup(key), (link) => link.clients[key] as InstanceType<S[K]>)

    const readinessService = yield* Readiness.fromStatus(status, readiness.bound)

    const call: Connection<S>["call"] = (service, method, request, callOptions = {}) => {
      const label = `${service}.${method}`
      const attempt = lookup(service).pipe(
        Retry.transient(lookupSchedule, { label: `lookup ${service}` }),
        Effect.flatMap((link) =>
          Call.unary(link.clients[service] as InstanceType<S[typeof service]>, service, method, request, {
            timeout: callOptions.timeout ?? callTimeout,
            metadata: callOptions.metadata,
            givenUp: link.lost
          }).pipe(Effect.zipLeft(supervisor.answered(link.generation)))
        ),
        breaker.protect,
        Effect.tapError((error) =>
          // A transient failure or a missed deadline may be the first sign of a dead link: have the supervisor look.
          Retry.isTransient(error, { idempotent: true })
            ? check
            : error._tag === "GrpcError" && GrpcError.isRejection(error.code)
            ? supervisor.reject(error)
            : Effect.void
        )
      )
      const resilient = callOptions.retry === false
        ? attempt
        : attempt.pipe(
          Retry.transient(callOptions.retry ?? callSchedule, { idempotent: callOptions.idempotent, label })
        )
      return Effect.flatMap(Effect.tracer, (tracer) =>
        isNativeTracer(tracer)
          ? resilient
          : Effect.withSpan(resilient, label, {
            kind: "client",
            attributes: { "rpc.service": service, "rpc.method": method },
            captureStackTrace: false
          }))
    }

    // The one mechanism that opens a stream on every generation, given its link.
    const eachLink = <A, E, R>(
      open: (link: Supervisor.Link) => Stream.Stream<A, E, R>,
      reopen: Schedule.Schedule<unknown, unknown> = streamReopen
    ): Stream.Stream<A, E, R> =>
      // On `links`: a new link or the close is a change there, an attempt of a reconnection is not.
      links.changes.pipe(
        Stream.takeWhile((s) => s.state._tag !== "Closed"),
        Stream.map((s) => s.link),
        Stream.changesWith((a, b) => a?.generation === b?.generation),
        Stream.flatMap((link) => (link === undefined ? Stream.empty : Stream.repeat(open(link), reopen)), {
          switch: true
        })
      )

    const eachGeneration: Connection<S>["eachGeneration"] = (open, reopen) =>
      eachLink((link) => open(link.generation), reopen)

    const stream: Connection<S>["stream"] = (service, method, request, callOptions = {}) => {
      type Message = Call.Request<InstanceType<S[typeof service]>, typeof method>
      // One generation's stream; a transient end is logged and has the link checked, then it is opened again.
      const onLink = (link: Supervisor.Link) => {
        const message: Message = typeof request === "function"
          ? (request as (generation: number) => Message)(link.generation)
          : request
        const client = link.clients[service] as InstanceType<S[typeof service]>
        return Call.serverStream(client, service, method, message, { ...callOptions, givenUp: link.lost }).pipe(
          Stream.catchAll((error) =>
            // CANCELLED reaches us only from the server (ours are never surfaced): it went away.
            Retry.isTransient(error) || error.code === grpc.status.CANCELLED
              ? Stream.execute(
                Effect.logWarning(
                  `${service}.${method} stream of generation ${link.generation} ended: ${error.message}`
                )
                  .pipe(Effect.zipRight(check))
              )
              : Stream.fail(error)
          )
        )
      }
      return eachLink(onLink)
    }

    return {
      address,
      services,
      call,
      stream,
      eachGeneration,
      breaker,
      state: currentState,
      changes: snapshot.changes.pipe(Stream.map((s) => s.state), Stream.changesWith(sameState)),
      transitions: links.changes.pipe(Stream.map((s) => s.state)),
      client,
      check,
      readiness: readinessService
    } satisfies Connection<S>
  })

const toContext = <S extends Services>(connection: Connection<S>) =>
  Context.make(Connection, connection as unknown as Connection).pipe(
    Context.add(Readiness.Readiness, connection.readiness)
  )

/**
 * The connection and its readiness as a layer: the supervisor runs for as long
 * as the layer's scope.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = <S extends Services, R = never>(
  options: Options<S, R>
): Layer.Layer<Connection | Readiness.Readiness, InvalidOption, GrpcChannel.Dialer | R> =>
  Layer.scopedContext(Effect.map(make(options), toContext))

/**
 * The connection's options as `Config` reads them (all but its services and credentials), under camelCase names
 * that the environment holds in CONSTANT_CASE: `masterAddress` (`MASTER_ADDRESS`, required), `connectTimeout`,
 * `lookupTimeout`, `reconnectingLookupTimeout`, `callTimeout`, `breakerThreshold`, `breakerHalfOpenBase` / `Cap`,
 * `rejectedRetryBase` / `Cap`, `maxMessageBytes` (the largest message accepted from the master), `keepaliveTime` /
 * `keepaliveTimeout`, the schedules' shapes (`reconnect*`: `Retry.reconnectConfig`; `callRetry*` / `callRetries`:
 * `Retry.callConfig`; `lookupRetr*`: `Retry.lookupConfig`) and the readiness options (`Readiness.config`). A
 * record: spread it to override one, `{ ...Connection.config, address: Config.succeed("master:9666") }`.
 *
 * @since 0.1.0
 * @category config
 */
export const config = {
  address: Cfg.address("masterAddress", "The master: host:port, [v6]:port or a gRPC target URI."),
  connectTimeout: Cfg.optional(Cfg.duration("connectTimeout", "How long one connection attempt waits for READY.")),
  lookupTimeout: Cfg.optional(Cfg.duration("lookupTimeout", "How long a client lookup waits while not reconnecting.")),
  reconnectingLookupTimeout: Cfg.optional(
    Cfg.duration("reconnectingLookupTimeout", "How long a client lookup waits while reconnecting.")
  ),
  callTimeout: Cfg.optional(Cfg.duration("callTimeout", "The deadline of one call attempt.")),
  breaker: Config.all({
    threshold: Cfg.optional(
      Cfg.integer("breakerThreshold", "Consecutive transient failures that open the breaker.", 1)
    ),
    halfOpenAfter: Retry.backoffConfig("breakerHalfOpen", Breaker.halfOpenBackoff, "an open breaker's wait")
  }),
  rejectedSchedule: Retry.backoffConfig(
    "rejectedRetry",
    rejectedBackoff,
    "the wait after the master refused the credentials"
  ),
  channelOptions: Config.map(
    Config.all({
      maxMessageBytes: Cfg.optional(
        Cfg.integer("maxMessageBytes", "The largest message accepted from the master.", 1024)
      ),
      keepaliveTime: Cfg.optional(Cfg.duration("keepaliveTime", "The HTTP/2 ping interval while a call is open.")),
      keepaliveTimeout: Cfg.optional(
        Cfg.duration("keepaliveTimeout", "How long an unanswered ping takes to drop the link.")
      )
    }),
    ({ keepaliveTime, keepaliveTimeout, maxMessageBytes }): grpc.ChannelOptions => ({
      // A larger message from the master fails its call with RESOURCE_EXHAUSTED instead of filling memory.
      ...(maxMessageBytes === undefined ? {} : { "grpc.max_receive_message_length": maxMessageBytes }),
      ...(keepaliveTime === undefined
        ? {}
        : { "grpc.keepalive_time_ms": Math.round(Duration.toMillis(keepaliveTime)) }),
      ...(keepaliveTimeout === undefined
        ? {}
        : { "grpc.keepalive_timeout_ms": Math.round(Duration.toMillis(keepaliveTimeout)) })
    })
  ),
  reconnectSchedule: Config.map(Retry.reconnectConfig, Retry.reconnectWith),
  callSchedule: Config.map(Retry.callConfig, Retry.callWith),
  lookupSchedule: Config.map(Retry.lookupConfig, Retry.lookupWith),
  readiness: Readiness.config
} satisfies Config.Config.Wrap<TagOptions<Services>>

/**
 * The connection and its readiness as a layer, with its services given in code and its options read from
 * `config` (default {@link config}): from the current `ConfigProvider`, or from the environment in CONSTANT_CASE
 * when the program set none (`Env.layer({ prefix: "EAST_" })` reads `EAST_MASTER_ADDRESS`, ...). A bad or
 * missing value fails the layer before it dials, with a `ConfigError` naming the variable.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = <S extends Services, R = never>(
  code: { readonly services: S },
  options: Config.Config.Wrap<TagOptions<S, R>> = config
): Layer.Layer<Connection | Readiness.Readiness, InvalidOption | ConfigError.ConfigError, GrpcChannel.Dialer | R> =>
  Layer.scopedContext(
    Effect.map(Effect.flatMap(Cfg.read(options), (read) => make<S, R>({ ...read, ...code })), toContext)
  )

/**
 * A connection tag: the identifier type `Self` and a {@link Connection} typed
 * by its services. `Connection.Connection` is the library's own, of any
 * services; declare one with {@link Tag} for each master an app talks to.
 *
 * @since 0.2.0
 * @category models
 */
export type AnyTag<Self = any, S extends Services = any> = Context.Tag<Self, Connection<S>>

/**
 * Which connection the health endpoint reports; without one, the
 * `Readiness.Readiness` in context. The worker's side requires its connection:
 * `TaskSource.Using`.
 *
 * @since 0.2.0
 * @category models
 */
export interface Using<C> {
  readonly connection?: C | undefined
}

/**
 * The options of a connection declared with {@link Tag}: its services are the tag's.
 *
 * @since 0.2.0
 * @category models
 */
export type TagOptions<S extends Services, R = never> = Omit<Options<S, R>, "services">

/**
 * A connection class tag, with its services and the layers that build it.
 *
 * @since 0.2.0
 * @category models
 */
export interface TagClass<Self, Id extends string, S extends Services>
  extends Context.TagClass<Self, Id, Connection<S>>
{
  /** The service clients the connection registers, by lookup key. */
  readonly services: S
  /** Builds the connection for as long as the layer's scope. */
  readonly layer: <R = never>(options: TagOptions<S, R>) => Layer.Layer<Self, InvalidOption, GrpcChannel.Dialer | R>
  /** {@link TagClass.layer} with the options read from `Config`: {@link layerConfig}, the services the tag's. */
  readonly layerConfig: <R = never>(
    config?: Config.Config.Wrap<TagOptions<S, R>>
  ) => Layer.Layer<Self, InvalidOption | ConfigError.ConfigError, GrpcChannel.Dialer | R>
}

/**
 * Declares a connection of your own, typed by its services at compile time,
 * as many as the app has masters:
 *
 * ```ts
 * class Master extends Connection.Tag("app/Master", TaskSource.services)<Master>() {}
 *
 * const MasterLive = Master.layer({ address: "master:9666" })
 * const program = Effect.gen(function*() {
 *   const master = yield* Master
 *   const reply = yield* master.call("task", "FetchTask", { node_key: "n1", fetch_id: "f1" })
 * })
 * ```
 *
 * @since 0.2.0
 * @category constructors
 */
export const Tag =
  <const Id extends string, const S extends Services>(id: Id, services: S) => <Self>(): TagClass<Self, Id, S> => {
    const tag = Context.Tag(id)<Self, Connection<S>>()
    const build = <R>(options: TagOptions<S, R>) => make<S, R>({ ...options, services })
    return Object.assign(tag, {
      services,
      layer: <R = never>(options: TagOptions<S, R>) => Layer.scoped(tag, build(options)),
      layerConfig: <R = never>(options: Config.Config.Wrap<TagOptions<S, R>> = config) =>
        Layer.scoped(tag, Effect.flatMap(Cfg.read(options), build))
    })
  }
