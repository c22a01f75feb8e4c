/**
 * The port over one gRPC channel: dial an address, read and watch its
 * connectivity state, ask it to connect, close it with its scope.
 *
 * `Connection` talks to channels only through this port, so the same
 * supervisor runs over @grpc/grpc-js (`layer`) or over the simulated network of
 * `effect-grpc-resilience/testing` under `TestClock`.
 *
 * @since 0.1.0
 */
import * as grpc from "@grpc/grpc-js"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"

/**
 * The connectivity states of a gRPC channel, as the gRPC spec names them.
 *
 * @since 0.1.0
 * @category models
 */
export type ConnectivityState = "IDLE" | "CONNECTING" | "READY" | "TRANSIENT_FAILURE" | "SHUTDOWN"

/**
 * One gRPC channel. It is closed when the scope it was dialed in closes.
 *
 * @since 0.1.0
 * @category models
 */
export interface GrpcChannel {
  readonly target: string
  /** The current connectivity state, without asking the channel to connect. */
  readonly state: Effect.Effect<ConnectivityState>
  /** The current state, then every change, event driven; ends after `SHUTDOWN`. */
  readonly changes: Stream.Stream<ConnectivityState>
  /** Asks an `IDLE` channel to start connecting. */
  readonly connect: Effect.Effect<void>
  /** The grpc-js channel that service clients are built on (`channelOverride`). */
  readonly channel: grpc.ChannelInterface
}

/**
 * What a channel is dialed with.
 *
 * @since 0.1.0
 * @category models
 */
export interface DialOptions {
  readonly address: string
  readonly credentials: grpc.ChannelCredentials
  readonly channelOptions: grpc.ChannelOptions
}

/**
 * Dials channels. Provided over grpc-js by {@link layer}, and over a simulated
 * network by `SimulatedNetwork.layer` in `effect-grpc-resilience/testing`.
 *
 * @since 0.1.0
 * @category tags
 */
export class Dialer extends Context.Tag("effect-grpc-resilience/GrpcChannel/Dialer")<Dialer, {
  readonly dial: (options: DialOptions) => Effect.Effect<GrpcChannel, never, Scope.Scope>
}>() {}

/**
 * Channel options every dialed channel gets unless the caller overrides them.
 *
 * - `grpc.use_local_subchannel_pool`: a new channel opens a new connection with
 *   a fresh backoff, instead of sharing a dead subchannel with the old one.
 * - keepalive every 20 s with a 5 s timeout, also without calls, so a
 *   half-open link is found even when the worker is idle.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultChannelOptions: grpc.ChannelOptions = {
  "grpc.use_local_subchannel_pool": 1,
  "grpc.keepalive_time_ms": 20_000,
  "grpc.keepalive_timeout_ms": 5_000,
  "grpc.keepalive_permit_without_calls": 1,
  "grpc.enable_channelz": 0
}

const stateName = (state: grpc.connectivityState): ConnectivityState =>
  grpc.connectivityState[state] as ConnectivityState

/**
 * Wraps a grpc-js channel in the port. The channel is owned by the caller.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromChannel = (channel: grpc.ChannelInterface): GrpcChannel => ({
  target: channel.getTarget(),
  channel,
  state: Effect.sync(() => stateName(channel.getConnectivityState(false))),
  connect: Effect.sync(() => {
    channel.getConnectivityState(true)
  }),
  changes: Stream.async<ConnectivityState>((emit) => {
    let active = true
    const watch = (last: grpc.connectivityState) => {
      if (!active) return
      if (last === grpc.connectivityState.SHUTDOWN) {
        emit.end()
        return
      }
      // No deadline: grpc-js then sets no timer, and the watcher fires on the next change or on close.
      channel.watchConnectivityState(last, Infinity, () => {
        if (!active) return
        const now = channel.getConnectivityState(false)
        emit.single(stateName(now))
        watch(now)
      })
    }
    const first = channel.getConnectivityState(false)
    emit.single(stateName(first))
    watch(first)
    return Effect.sync(() => {
      active = false
    })
  })
})

/**
 * Dials real channels with @grpc/grpc-js.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<Dialer> = Layer.succeed(Dialer, {
  dial: (options) =>
    Effect.acquireRelease(
      Effect.sync(() =>
        fromChannel(
          new grpc.Channel(options.address, options.credentials, {
            ...defaultChannelOptions,
            ...options.channelOptions
          })
        )
      ),
      (channel) => Effect.sync(() => channel.channel.close())
    )
})
