/**
 * A simulated network and the channels dialed over it. Every delay in it is an
 * Effect sleep, so `TestClock` drives it: minutes of outage run in
 * milliseconds, and times can be asserted exactly.
 *
 * The link between worker and master is `up`, `down` (cut: open connections
 * drop at once and new ones fail, as when an interface is removed; `fail`
 * says how they fail: refused, host unreachable, name not resolved, TLS
 * refused) or `blackhole` (frames vanish: open connections look READY until
 * keepalive gives up on them, and new ones hang in CONNECTING: a connect
 * timeout).
 *
 * @since 0.1.0
 */
import * as grpc from "@grpc/grpc-js"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import * as GrpcChannel from "../GrpcChannel.js"
import { GrpcError } from "../GrpcError.js"
import * as Readiness from "../Readiness.js"

/**
 * @since 0.1.0
 * @category models
 */
export type LinkState = "up" | "down" | "blackhole"

/**
 * How new connections fail while the link is down: the reasons a real
 * channel names (`GrpcChannel.FailureReason`), less `Unrecognized`.
 *
 * @since 0.2.0
 * @category models
 */
export type Refusal = Exclude<GrpcChannel.FailureReason, "Unrecognized">

/**
 * How the simulated master answers: `serving`, `not-serving` (it answers, but
 * its health says NOT_SERVING), `silent` (it accepts connections and never
 * answers a call: a hung process), `rejecting` (it refuses the worker's
 * credentials: UNAUTHENTICATED), or `stalled` (it accepts TCP connections and
 * never finishes their HTTP/2 handshake: a master too busy for new
 * connections; open ones go on).
 *
 * @since 0.1.0
 * @category models
 */
export type MasterState = "serving" | "not-serving" | "silent" | "rejecting" | "stalled"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * Time from "connect" to READY of a new connection (or to its failure, when
   * the link goes down meanwhile). Default 50 ms.
   */
  readonly connectLatency?: Duration.DurationInput | undefined
  /**
   * Time from "connect" to the failure of a new connection while the link is
   * down (cut or `fail`ed). Default 0: a refusal, an unreachable host or a
   * failed name resolution comes back at once, as on a local network, so an
   * attempt during an outage costs `TestClock` no wake-up of its own, only
   * the reconnect schedule's delay.
   *
   * @since 0.3.0
   */
  readonly refusalLatency?: Duration.DurationInput | undefined
  /**
   * How long an open connection on a blackholed link stays `READY` before its channel gives it up. Default 25 s
   * (a 20 s keepalive and its 5 s timeout). The library's own keepalive is 5 min 10 s: a worker notices a dead
   * link sooner, by its `Subscribe` stream's silence and the probe, which do not depend on this.
   */
  readonly keepaliveDetection?: Duration.DurationInput | undefined
  /** The link at start. Default `up`. */
  readonly link?: LinkState | undefined
  /** Time a call takes to answer. Default 0. */
  readonly callLatency?: Duration.DurationInput | undefined
  /** How new connections fail after `cut`. Default `HostUnreachable`, as when an interface is removed. */
  readonly cutFailure?: Refusal | undefined
}

/**
 * The test's handle on the network.
 *
 * @since 0.1.0
 * @category models
 */
export interface SimulatedNetwork {
  /** The link now, then every change. */
  readonly link: SubscriptionRef.SubscriptionRef<LinkState>
  /** Cuts the link: connections drop at once, new ones fail (as `cutFailure` says). */
  readonly cut: Effect.Effect<void>
  /**
   * Cuts the link, and new connections fail with `reason`: `Refused` (the
   * master is not listening), `HostUnreachable`, `NameNotResolved`, `TlsRefused`.
   *
   * @since 0.2.0
   */
  readonly fail: (reason: Refusal) => Effect.Effect<void>
  /** Restores the link. Nothing reconnects by itself: a channel connects when asked. */
  readonly restore: Effect.Effect<void>
  /** Frames vanish: connections stay READY until keepalive detection, new ones hang. */
  readonly blackhole: Effect.Effect<void>
  /** How the master answers calls, now and after each change. */
  readonly master: SubscriptionRef.SubscriptionRef<MasterState>
  /**
   * One call over a channel: fails UNAVAILABLE unless the channel is READY
   * and the link up, hangs while the link is blackholed or the master silent,
   * else runs `handler` after the call latency.
   */
  readonly call: <A, E, R>(
    channel: GrpcChannel.GrpcChannel,
    method: string,
    handler: Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | GrpcError, R>
  /**
   * `call`, on the channel of a grpc-js client built over a simulated channel
   * (the client a `Connection` lookup returns). Dies for any other client.
   */
  readonly callOn: <A, E, R>(
    client: grpc.Client,
    method: string,
    handler: Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | GrpcError, R>
  /**
   * A server stream on a client's simulated channel: opened as `callOn` opens
   * a call, then `messages`, held while the link is blackholed, until the
   * channel leaves READY or the link goes down: then it fails UNAVAILABLE.
   * Dies for a client on another channel.
   */
  readonly streamOn: <A, E, R>(
    client: grpc.Client,
    method: string,
    messages: Stream.Stream<A, E, R>
  ) => Stream.Stream<A, E | GrpcError, R>
  /** How many channels were dialed so far. */
  readonly dials: Effect.Effect<number>
  /** How many dialed channels are not closed yet. */
  readonly openChannels: Effect.Effect<number>
}

/**
 * @since 0.1.0
 * @category tags
 */
export const SimulatedNetwork: Context.TagClass<
  SimulatedNetwork,
  "effect-grpc-resilience/testing/SimulatedNetwork",
  SimulatedNetwork
> = Context.Tag(
  "effect-grpc-resilience/testing/SimulatedNetwork"
)<SimulatedNetwork, SimulatedNetwork>()

// What grpc-js would say, as a real channel's `failure` reads it.
const details: Record<Refusal, string> = {
  Refused: "connect ECONNREFUSED",
  HostUnreachable: "connect EHOSTUNREACH",
  NameNotResolved: "Name resolution failed",
  TlsRefused: "unable to verify the first certificate"
}

const connectivity = { IDLE: 0, CONNECTING: 1, READY: 2, TRANSIENT_FAILURE: 3, SHUTDOWN: 4 } as const
const connectivityNames: ReadonlyArray<GrpcChannel.ConnectivityState> = [
  "IDLE",
  "CONNECTING",
  "READY",
  "TRANSIENT_FAILURE",
  "SHUTDOWN"
]

// The grpc-js face of a simulated channel: enough for client constructors (`channelOverride`), no calls.
class SimulatedGrpcChannel implements grpc.ChannelInterface {
  constructor(
    readonly target: string,
    readonly state: SubscriptionRef.SubscriptionRef<GrpcChannel.ConnectivityState>
  ) {}
  close() {}
  getTarget() {
    return this.target
  }
  getConnectivityState(_tryToConnect?: boolean): grpc.connectivityState {
    return connectivity[Effect.runSync(SubscriptionRef.get(this.state))]
  }
  watchConnectivityState(): void {
    throw new Error("simulated channel: watch the port's `changes` stream instead")
  }
  getChannelzRef(): never {
    throw new Error("simulated channel: no channelz")
  }
  createCall(method: string): never {
    throw new Error(`simulated channel carries no grpc-js calls (${method}); simulate the service instead`)
  }
}

/**
 * Builds a simulated network and a `GrpcChannel.Dialer` over it.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<readonly [SimulatedNetwork, GrpcChannel.Dialer["Type"]]> =>
  Effect.gen(function*() {
    const connectLatency = Duration.decode(options.connectLatency ?? "50 millis")
    const refusalLatency = Duration.decode(options.refusalLatency ?? 0)
    const keepaliveDetection = Duration.decode(options.keepaliveDetection ?? "25 seconds")
    const link = yield* SubscriptionRef.make<LinkState>(options.link ?? "up")
    const callLatency = Duration.decode(options.callLatency ?? 0)
    const master = yield* SubscriptionRef.make<MasterState>("serving")
    const dials = yield* Ref.make(0)
    const open = yield* Ref.make(0)
    const cutFailure = options.cutFailure ?? "HostUnreachable"
    const refusal = yield* Ref.make<Refusal>(cutFailure)
    const fail = (reason: Refusal) => Effect.zipRight(Ref.set(refusal, reason), SubscriptionRef.set(link, "down"))

    const dial = (dialOptions: GrpcChannel.DialOptions): Effect.Effect<GrpcChannel.GrpcChannel, never, Scope.Scope> =>
      Effect.gen(function*() {
        const scope = yield* Effect.scope
        const state = yield* SubscriptionRef.make<GrpcChannel.ConnectivityState>("IDLE")
        // Why the last connection failed, and how far a connecting one got.
        const failure = yield* Ref.make<GrpcChannel.Failure>({ reason: "Unrecognized", detail: "no connection failed" })
        const stage = yield* Ref.make<GrpcChannel.Stage>("Connect")
        // When the connection under way settles by itself, or `undefined` once it hangs (a blackholed TCP
        // handshake, a stalled master): a wait for it needs a timer only then, so a connect that fails or succeeds
        // on time leaves no deadline behind for the clock to wake up to.
        const settlesAt = yield* SubscriptionRef.make<number | undefined>(undefined)
        yield* Ref.update(dials, (n) => n + 1)
        yield* Effect.acquireRelease(
          Ref.update(open, (n) => n + 1),
          () => Effect.zipRight(SubscriptionRef.set(state, "SHUTDOWN"), Ref.update(open, (n) => n - 1))
        )

        // The connection fails as the link's refusal says.
        const refuse = Effect.gen(function*() {
          const reason = yield* Ref.get(refusal)
          yield* Ref.set(failure, { reason, detail: `simulated: ${details[reason]} (${dialOptions.address})` })
          yield* SubscriptionRef.update(state, (s) => (s === "CONNECTING" ? "TRANSIENT_FAILURE" : s))
        })

        // An open connection follows the link: dropped on a cut, kept until keepalive gives up on a blackhole.
        // Followed from the first READY on: a connection never open has nothing to drop.
        const follow = link.changes.pipe(
          Stream.runForEach((l) =>
            l === "down"
              ? SubscriptionRef.update(state, (s) => (s === "READY" ? "IDLE" : s))
              : l === "blackhole"
              ? Effect.forkIn(
                Effect.sleep(keepaliveDetection).pipe(
                  Effect.zipRight(Ref.get(link)),
                  Effect.flatMap((still) =>
                    still === "blackhole"
                      ? SubscriptionRef.update(state, (s) => (s === "READY" ? "IDLE" : s))
                      : Effect.void
                  )
                ),
                scope
              )
              : Effect.void
          )
        )
        let following = false
        const opened = Effect.suspend(() => {
          if (following) return Effect.void
          following = true
          return Effect.asVoid(Effect.forkIn(follow, scope))
        })

        // `latency`: how long the connection takes to settle, as the link was when it started.
        const settle = (latency: Duration.Duration) =>
          Effect.gen(function*() {
            yield* Ref.set(stage, "Connect")
            // No sleep for no time: under the live clock it would still be a timer.
            if (Duration.toMillis(latency) > 0) yield* Effect.sleep(latency)
            while (true) {
              // A blackholed TCP handshake hangs until the link changes.
              if ((yield* Ref.get(link)) === "blackhole") yield* SubscriptionRef.set(settlesAt, undefined)
              const now = yield* link.changes.pipe(Stream.filter((l) => l !== "blackhole"), Stream.runHead)
              if (now._tag === "Some" && now.value !== "up") return yield* refuse
              if ((yield* Ref.get(master)) !== "stalled") {
                yield* opened
                return yield* SubscriptionRef.update(state, (s) => (s === "CONNECTING" ? "READY" : s))
              }
              // A stalled master accepted the connection and sends no HTTP/2 settings until it recovers.
              yield* Ref.set(stage, "Handshake")
              yield* SubscriptionRef.set(settlesAt, undefined)
              yield* Effect.raceFirst(
                master.changes.pipe(Stream.filter((m) => m !== "stalled"), Stream.runHead),
                link.changes.pipe(Stream.filter((l) => l !== "up"), Stream.runHead)
              )
            }
          })
        const connect = SubscriptionRef.modify(
          state,
          (s) => s === "IDLE" || s === "TRANSIENT_FAILURE" ? [true, "CONNECTING"] as const : [false, s] as const
        ).pipe(
          Effect.flatMap((start) =>
            start
              ? Effect.gen(function*() {
                const now = yield* Clock.currentTimeMillis
                // A link down now refuses the connection after the refusal latency (at once: here, with no fiber
                // to settle it); else it takes the connect latency.
                const down = (yield* Ref.get(link)) === "down"
                if (down && Duration.toMillis(refusalLatency) === 0) {
                  yield* Ref.set(stage, "Connect")
                  return yield* refuse
                }
                const latency = down ? refusalLatency : connectLatency
                yield* SubscriptionRef.set(settlesAt, now + Duration.toMillis(latency))
                yield* Effect.forkIn(settle(latency), scope)
              })
              : Effect.void
          )
        )

        return {
          target: dialOptions.address,
          state: SubscriptionRef.get(state),
          changes: state.changes.pipe(Stream.takeUntil((s) => s === "SHUTDOWN")),
          next: (from, deadline) => {
            const changed = state.changes.pipe(
              Stream.filter((s) => s !== from || s === "SHUTDOWN"),
              Stream.runHead,
              Effect.map(Option.getOrElse((): GrpcChannel.ConnectivityState => "SHUTDOWN"))
            )
            // The deadline's timer is armed only when the state may still be `from` at the deadline: at once for
            // any state but CONNECTING, else when the connection hangs or would settle too late.
            const late = settlesAt.changes.pipe(
              Stream.filter((at) => from !== "CONNECTING" || at === undefined || at > deadline),
              Stream.runHead,
              Effect.zipRight(Clock.currentTimeMillis),
              Effect.flatMap((now) => Effect.sleep(Math.max(0, deadline - now))),
              Effect.as(undefined)
            )
            return Effect.raceFirst(changed, late)
          },
          connect,
          channel: new SimulatedGrpcChannel(dialOptions.address, state),
          failure: Ref.get(failure),
          stage: Ref.get(stage)
        } satisfies GrpcChannel.GrpcChannel
      })

    const unavailable = (method: string, details: string) =>
      new GrpcError({ code: grpc.status.UNAVAILABLE, details, service: "simulated", method })

    // What every call and stream goes through before the master sees it.
    const opening = (
      state: Effect.Effect<GrpcChannel.ConnectivityState>,
      method: string
    ): Effect.Effect<void, GrpcError> =>
      Effect.gen(function*() {
        const now = yield* state
        if (now !== "READY") return yield* unavailable(method, `channel ${now}`)
        yield* Effect.sleep(callLatency)
        const current = yield* Ref.get(link)
        if (current === "down") return yield* unavailable(method, "connection reset")
        if (current === "blackhole" || (yield* Ref.get(master)) === "silent") return yield* Effect.never
      })

    const call = <A, E, R>(channel: GrpcChannel.GrpcChannel, method: string, handler: Effect.Effect<A, E, R>) =>
      Effect.zipRight(opening(channel.state, method), handler)

    const simulated = (client: grpc.Client) =>
      Effect.suspend(() => {
        const channel = client.getChannel()
        return channel instanceof SimulatedGrpcChannel
          ? Effect.succeed(channel)
          : Effect.dieMessage(`SimulatedNetwork: the client's channel (${channel.getTarget()}) is not a simulated one`)
      })

    // The state as grpc-js reports it to the client.
    const stateOf = (channel: SimulatedGrpcChannel) =>
      Effect.sync(() => connectivityNames[channel.getConnectivityState(false)] ?? "SHUTDOWN")

    const callOn = <A, E, R>(client: grpc.Client, method: string, handler: Effect.Effect<A, E, R>) =>
      Effect.flatMap(simulated(client), (channel) => Effect.zipRight(opening(stateOf(channel), method), handler))

    const streamOn = <A, E, R>(client: grpc.Client, method: string, messages: Stream.Stream<A, E, R>) =>
      Stream.unwrap(Effect.map(simulated(client), (channel) => {
        const lost = Effect.raceFirst(
          channel.state.changes.pipe(
            Stream.filter((state) => state !== "READY"),
            Stream.runHead,
            Effect.flatMap((state) => unavailable(method, `channel ${Option.getOrElse(state, () => "SHUTDOWN")}`))
          ),
          link.changes.pipe(
            Stream.filter((l) => l === "down"),
            Stream.runHead,
            Effect.zipRight(unavailable(method, "connection reset"))
          )
        )
        // Frames sent into a blackhole arrive when it lifts, unless the connection died first.
        const delivered = link.changes.pipe(Stream.filter((l) => l !== "blackhole"), Stream.runHead)
        return Stream.fromEffect(opening(stateOf(channel), method)).pipe(
          Stream.flatMap(() => Stream.mapEffect(messages, (message) => Effect.as(delivered, message))),
          Stream.interruptWhen(lost)
        )
      }))

    const network: SimulatedNetwork = {
      link,
      master,
      call,
      callOn,
      streamOn,
      cut: fail(cutFailure),
      fail,
      restore: SubscriptionRef.set(link, "up"),
      blackhole: SubscriptionRef.set(link, "blackhole"),
      dials: Ref.get(dials),
      openChannels: Ref.get(open)
    }
    return [network, { dial }] as const
  })

/**
 * The simulated network and a `GrpcChannel.Dialer` over it.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<SimulatedNetwork | GrpcChannel.Dialer> =>
  Layer.effectContext(
    Effect.map(make(options), ([network, dialer]) =>
      Context.make(SimulatedNetwork, network).pipe(Context.add(GrpcChannel.Dialer, dialer)))
  )

/**
 * A readiness probe over the simulated network: the simulated master's health
 * as the standard health check would report it.
 *
 * @since 0.1.0
 * @category probes
 */
export const probe: Readiness.Probe<SimulatedNetwork> = (target) =>
  Effect.flatMap(SimulatedNetwork, (network) =>
    network.call(
      target.channel,
      "grpc.health.v1.Health/Check",
      Effect.flatMap(
        Ref.get(network.master),
        (state) =>
          state === "serving" || state === "stalled"
            ? Effect.void
            : state === "rejecting"
            ? Effect.fail(
              new Readiness.ProbeFailed({
                reason: "Rejected",
                code: grpc.status.UNAUTHENTICATED,
                message: "UNAUTHENTICATED: bad credentials"
              })
            )
            : Effect.fail(new Readiness.ProbeFailed({ reason: "NotServing", message: "health status NOT_SERVING" }))
      )
    ).pipe(
      Effect.catchTag("GrpcError", (error) =>
        Effect.fail(new Readiness.ProbeFailed({ reason: "Unavailable", code: error.code, message: error.details })))
    ))
