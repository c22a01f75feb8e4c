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
import * as Metric from "effect/Metric"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { formatMillis } from "./internal/shared/format.js"
import { dialTarget } from "./internal/shared/validate.js"
import * as Metrics from "./Metrics.js"

/**
 * The connectivity states of a gRPC channel, as the gRPC spec names them.
 *
 * @since 0.1.0
 * @category models
 */
export type ConnectivityState = "IDLE" | "CONNECTING" | "READY" | "TRANSIENT_FAILURE" | "SHUTDOWN"

/**
 * Why a channel's connection failed, named from what grpc-js said:
 *
 * - `Refused`: the master's side said no. Nothing listens on the port
 *   (ECONNREFUSED), or the connection was reset or closed before the HTTP/2
 *   handshake finished (a proxy or load balancer without a backend).
 * - `HostUnreachable`: no route to the master's host (EHOSTUNREACH,
 *   ENETUNREACH, ENETDOWN, EHOSTDOWN, EADDRNOTAVAIL).
 * - `NameNotResolved`: the master's name did not resolve.
 * - `TlsRefused`: the TLS handshake failed: a certificate not trusted or not
 *   for that name, a client certificate refused, TLS to a plaintext port.
 * - `Unrecognized`: anything else; `detail` has grpc-js's words.
 *
 * @since 0.2.0
 * @category models
 */
export type FailureReason = "Refused" | "HostUnreachable" | "NameNotResolved" | "TlsRefused" | "Unrecognized"

/**
 * A channel's failure: the reason, and grpc-js's own words for it.
 *
 * @since 0.2.0
 * @category models
 */
export interface Failure {
  readonly reason: FailureReason
  /** grpc-js's last connection error, as it wrote it. */
  readonly detail: string
}

/**
 * How far the connection of a `CONNECTING` channel got:
 *
 * - `Resolve`: the master's name has not resolved yet.
 * - `Connect`: no TCP connection yet (or no TLS over it): nothing answered.
 * - `Handshake`: connected, and the master's HTTP/2 settings have not come:
 *   a master too busy to serve a new connection, or a link that went dead
 *   after the TCP handshake.
 * - `Unknown`: the channel does not say.
 *
 * @since 0.2.0
 * @category models
 */
export type Stage = "Resolve" | "Connect" | "Handshake" | "Unknown"

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
  /**
   * The state once it is no longer `from`, event driven: at once when it is
   * not `from` now; `SHUTDOWN` when the channel is shut down; `undefined` when
   * it is still `from` at `deadline` (epoch milliseconds, by the `Clock`). One
   * step of `changes`, without a stream or a race: what a connection attempt
   * waits on.
   *
   * @since 0.2.0
   */
  readonly next: (from: ConnectivityState, deadline: number) => Effect.Effect<ConnectivityState | undefined>
  /** Asks an `IDLE` channel to start connecting. */
  readonly connect: Effect.Effect<void>
  /** The grpc-js channel that service clients are built on (`channelOverride`). */
  readonly channel: grpc.ChannelInterface
  /**
   * Why a channel in `TRANSIENT_FAILURE` failed: its last connection error,
   * named. Read once, when an attempt fails.
   *
   * @since 0.2.0
   */
  readonly failure: Effect.Effect<Failure>
  /**
   * How far the connection of a `CONNECTING` channel got. Read once, when an
   * attempt times out.
   *
   * @since 0.2.0
   */
  readonly stage: Effect.Effect<Stage>
  /**
   * The keepalive interval grpc-js pings with on this channel now, in
   * milliseconds: the dialed one, doubled for every GOAWAY "too_many_pings" the
   * master sent on it. `undefined` when the channel does not say (a simulated
   * one, or a grpc-js that keeps it elsewhere). Read when the channel closes.
   *
   * @since 0.3.0
   */
  readonly keepaliveTime?: Effect.Effect<number | undefined>
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
 * How often a channel pings its master by default: every 5 minutes and 10 s.
 *
 * Servers on grpc-go or gRPC C-core (Python, C++, Ruby, PHP...) enforce a ping
 * policy by default: a ping less than 5 minutes after the one before, with no
 * headers or data sent by the server in between, is a strike, and the third
 * strike ends the connection with GOAWAY ENHANCE_YOUR_CALM "too_many_pings".
 * A worker busy with long tasks makes no other calls, so pings every 20 s got it
 * there 80 s after its last call. grpc-js pings at most once per interval after
 * the previous ping's answer, so a server sees them at least this far apart;
 * the 10 s over 5 minutes are for two hosts' clocks that run at different rates.
 *
 * Keepalive is then not what finds a dead link quickly: the master's
 * `Keepalive` messages on the `Subscribe` stream do (their silence, at no call's
 * cost), and the readiness probe (every 30 s unless a call was answered, 2 s
 * timeout) and every call's deadline; the master's own pings find a dead worker
 * on its side.
 *
 * @since 0.3.0
 * @category constants
 */
export const defaultKeepaliveTime = 310_000

/**
 * Channel options every dialed channel gets unless the caller overrides them.
 *
 * - `grpc.use_local_subchannel_pool`: a new channel opens a new connection with
 *   a fresh backoff, instead of sharing a dead subchannel with the old one.
 * - keepalive every {@link defaultKeepaliveTime} (5 min 10 s) with a 5 s
 *   timeout, only while a call is open: what servers on grpc-go or C-core accept
 *   with their default policy, which counts every ping without an open call as
 *   a strike (the worker's task stream is always open).
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultChannelOptions: grpc.ChannelOptions = {
  "grpc.use_local_subchannel_pool": 1,
  "grpc.keepalive_time_ms": defaultKeepaliveTime,
  "grpc.keepalive_timeout_ms": 5_000,
  "grpc.keepalive_permit_without_calls": 0,
  "grpc.enable_channelz": 0
}

const stateName = (state: grpc.connectivityState): ConnectivityState =>
  grpc.connectivityState[state] as ConnectivityState

// The patterns, in order: a TLS error may also carry ECONNRESET, a resolution failure no errno.
const patterns: ReadonlyArray<readonly [FailureReason, RegExp]> = [
  [
    "NameNotResolved",
    /Name resolution failed|No addresses resolved|Failed to parse DNS address|ENOTFOUND|EAI_AGAIN|EAI_NONAME/
  ],
  ["HostUnreachable", /EHOSTUNREACH|ENETUNREACH|ENETDOWN|EHOSTDOWN|EADDRNOTAVAIL/],
  // The peer went away before TLS could be refused: a reset like any other.
  ["Refused", /socket disconnected before secure TLS connection/],
  [
    "TlsRefused",
    /SSL routines|ssl3_|tlsv1|alert|certificate|CERT_|self[- ]signed|unable to (?:verify|get)|altnames|ERR_SSL|ERR_TLS/i
  ],
  ["Refused", /ECONNREFUSED|ECONNRESET|ECONNABORTED|EPIPE|Socket closed|Failed to connect|Connection closed before/]
]

/**
 * Names a connection failure from grpc-js's text for it, the one place the
 * text is read: grpc-js reports every connection failure as UNAVAILABLE,
 * with the reason only in its details ("No connection established. Last
 * error: Error: connect ECONNREFUSED 127.0.0.1:9666 ...").
 *
 * @since 0.2.0
 * @category classification
 */
export const classify = (detail: string): FailureReason =>
  patterns.find(([, pattern]) => pattern.test(detail))?.[0] ?? "Unrecognized"

// grpc-js 1.14's subchannel, as far as this module reads it. Every member is checked before use: a grpc-js
// without them gets a plain close and an `Unknown` stage.
interface SubchannelInternals {
  readonly backoffTimeout?: { readonly stop?: unknown } | undefined
  continueConnecting?: unknown
  readonly connector?: { readonly session?: unknown; readonly shutdown?: unknown } | undefined
  readonly keepaliveTime?: unknown
}

// The subchannels of the channel's own pool, or `undefined` when grpc-js does not show them.
const subchannelsOf = (channel: grpc.ChannelInterface): ReadonlyArray<SubchannelInternals> | undefined => {
  const internal = (channel as { readonly internalChannel?: { readonly subchannelPool?: { readonly pool?: unknown } } })
    .internalChannel
  const pool = internal?.subchannelPool?.pool
  if (typeof pool !== "object" || pool === null) return undefined
  return Object.values(pool as Record<string, unknown>).flatMap((entries) =>
    Array.isArray(entries)
      ? entries.flatMap((entry) =>
        typeof entry === "object" && entry !== null && typeof entry.subchannel === "object" && entry.subchannel !== null
          ? [entry.subchannel as SubchannelInternals]
          : []
      )
      : []
  )
}

const stageOf = (channel: grpc.ChannelInterface): Stage => {
  const subchannels = subchannelsOf(channel)
  if (subchannels === undefined) return "Unknown"
  if (subchannels.length === 0) return "Resolve"
  // The connector holds an HTTP/2 session only from the end of the TCP (and TLS) handshake to READY.
  return subchannels.some((s) => s.connector?.session !== undefined && s.connector.session !== null)
    ? "Handshake"
    : "Connect"
}

/**
 * The longest keepalive interval of the channel's subchannels. grpc-js 1.14
 * makes no public sign of a GOAWAY "too_many_pings": its channel goes IDLE as
 * for any GOAWAY, its calls fail with RESOURCE_EXHAUSTED as for any
 * ENHANCE_YOUR_CALM, and the words "excess pings" go only to its global logger.
 * What it does is double the interval of that subchannel, and only there; so
 * that is what is read, as a number, and nothing is remembered when it is not one.
 */
const keepaliveOf = (channel: grpc.ChannelInterface): number | undefined => {
  const times = (subchannelsOf(channel) ?? []).flatMap((s) =>
    typeof s.keepaliveTime === "number" && s.keepaliveTime > 0 ? [s.keepaliveTime] : []
  )
  return times.length === 0 ? undefined : Math.max(...times)
}

/**
 * Closes a channel dialed with its own subchannel pool, and stops what
 * grpc-js 1.14 leaves running behind a closed channel: a subchannel closed in
 * TRANSIENT_FAILURE still reconnects when its backoff timer fires (a
 * connection to the master nobody uses, kept open by keepalive), and one
 * closed during the HTTP/2 handshake keeps its socket until the peer closes it.
 */
const closeQuietly = (channel: grpc.ChannelInterface): void => {
  const subchannels = subchannelsOf(channel) ?? []
  channel.close()
  for (const subchannel of subchannels) {
    const backoff = subchannel.backoffTimeout
    if (typeof backoff?.stop === "function") backoff.stop()
    if (typeof subchannel.continueConnecting === "boolean") subchannel.continueConnecting = false
    const connector = subchannel.connector
    if (typeof connector?.shutdown === "function") connector.shutdown()
  }
}

type LastErrorCall = ReturnType<grpc.ChannelInterface["createCall"]>

// What a call would fail with on a channel in TRANSIENT_FAILURE, read from grpc-js 1.14's picker for that state
// (its status, "No connection established. Last error: ..."), or `undefined` when grpc-js does not show it.
const pickerDetails = (channel: grpc.ChannelInterface): string | undefined => {
  if (channel.getConnectivityState(false) !== grpc.connectivityState.TRANSIENT_FAILURE) return undefined
  const picker = (channel as { readonly internalChannel?: { readonly currentPicker?: { readonly status?: unknown } } })
    .internalChannel?.currentPicker
  const status = picker?.status
  if (typeof status !== "object" || status === null) return undefined
  const details = (status as { readonly details?: unknown }).details
  return typeof details === "string" && details.length > 0 ? details : undefined
}

// The channel's last connection error: the words a call that does not wait for READY fails with at once. Read from
// the channel's picker where grpc-js shows it: a call costs a refused attempt more than the rest of its failure.
const failureOf = (channel: grpc.ChannelInterface): Effect.Effect<Failure> =>
  Effect.suspend(() => {
    const details = pickerDetails(channel)
    return details === undefined
      ? failureByCall(channel)
      : Effect.succeed<Failure>({ reason: classify(details), detail: details })
  })

// The same, by a call that does not wait for READY: it fails at once with the last error in its details.
const failureByCall = (channel: grpc.ChannelInterface): Effect.Effect<Failure> =>
  Effect.async<Failure>((resume) => {
    let call: LastErrorCall | undefined
    try {
      call = channel.createCall("/effect-grpc-resilience.Connection/LastError", Date.now() + 1_000, null, null, null)
      call.start(new grpc.Metadata(), {
        onReceiveMetadata: () => {},
        onReceiveMessage: () => {},
        onReceiveStatus: (status) =>
          resume(Effect.succeed({ reason: classify(status.details), detail: status.details }))
      })
      call.halfClose()
    } catch (error) {
      resume(Effect.succeed({ reason: "Unrecognized", detail: String(error) }))
    }
    return Effect.sync(() => call?.cancelWithStatus(grpc.status.CANCELLED, "not needed"))
  })

// Wraps a grpc-js channel in the port. The channel is owned by the caller.
const fromChannel = (channel: grpc.ChannelInterface): GrpcChannel => ({
  target: channel.getTarget(),
  channel,
  failure: failureOf(channel),
  stage: Effect.sync(() => stageOf(channel)),
  keepaliveTime: Effect.sync(() => keepaliveOf(channel)),
  state: Effect.sync(() => stateName(channel.getConnectivityState(false))),
  connect: Effect.sync(() => {
    channel.getConnectivityState(true)
  }),
  next: (from, deadline) =>
    Effect.async<ConnectivityState | undefined>((resume) => {
      let active = true
      const now = channel.getConnectivityState(false)
      if (stateName(now) !== from || now === grpc.connectivityState.SHUTDOWN) {
        resume(Effect.succeed(stateName(now)))
        return
      }
      // grpc-js keeps the deadline with one timer of its own, and calls back with an error when it passes.
      channel.watchConnectivityState(now, deadline, (error) => {
        if (active) {
          resume(Effect.succeed(error === undefined ? stateName(channel.getConnectivityState(false)) : undefined))
        }
      })
      return Effect.sync(() => {
        active = false
      })
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
 * Dials real channels with @grpc/grpc-js. A channel with its own subchannel
 * pool (the default) leaves nothing behind when closed: no reconnection of
 * its subchannel, no socket of a handshake cut short.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<Dialer> = Layer.succeed(Dialer, {
  dial: (options) =>
    Effect.acquireRelease(
      Effect.sync(() => {
        const channelOptions = { ...defaultChannelOptions, ...options.channelOptions }
        const ownPool = Boolean(channelOptions["grpc.use_local_subchannel_pool"])
        return [
          fromChannel(new grpc.Channel(dialTarget(options.address), options.credentials, channelOptions)),
          ownPool
        ] as const
      }),
      ([channel, ownPool]) => Effect.sync(() => (ownPool ? closeQuietly(channel.channel) : channel.channel.close()))
    ).pipe(Effect.map(([channel]) => channel))
})

/**
 * Dials through `dialer`, each channel with the longest keepalive interval an
 * earlier one ended with. grpc-js doubles a channel's interval when the master
 * ends its connection with GOAWAY "too_many_pings", but a new channel starts
 * again from the configured one, and a connection dials a new channel for
 * every reconnection: without this, a master whose policy refuses the
 * configured interval would end every connection the same way. A longer
 * interval found is logged as a warning and counted in
 * `grpc_resilience_keepalive_refusals_total`.
 *
 * @since 0.3.0
 * @category constructors
 */
export const rememberKeepalive = (dialer: Context.Tag.Service<Dialer>): Effect.Effect<Context.Tag.Service<Dialer>> =>
  Effect.sync(() => {
    let longest: number | undefined
    return {
      dial: (options) => {
        const configured = { ...defaultChannelOptions, ...options.channelOptions }["grpc.keepalive_time_ms"]
        // A keepalive turned off (absent, 0, -1) stays off.
        if (typeof configured !== "number" || configured <= 0) return dialer.dial(options)
        const dialed = Math.max(configured, longest ?? 0)
        const channelOptions = dialed === configured
          ? options.channelOptions
          : { ...options.channelOptions, "grpc.keepalive_time_ms": dialed }
        return Effect.tap(dialer.dial({ ...options, channelOptions }), (channel) => {
          const keepaliveTime = channel.keepaliveTime
          if (keepaliveTime === undefined) return Effect.void
          // Read as the channel closes: grpc-js doubles the interval just after the channel has left READY.
          return Effect.addFinalizer(() =>
            Effect.flatMap(keepaliveTime, (now) => {
              if (now === undefined || now <= dialed) return Effect.void
              longest = Math.max(now, longest ?? 0)
              return Effect.logWarning(
                `the master ended the connection with GOAWAY too_many_pings: it refuses pings every ${
                  formatMillis(dialed)
                }; the next connections ping every ${formatMillis(longest)}`
              ).pipe(Effect.zipRight(Metric.increment(Metrics.keepaliveRefusals)))
            })
          )
        })
      }
    }
  })
