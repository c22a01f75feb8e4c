/**
 * What the connection is doing, and the errors it reports: the state the
 * supervisor publishes, why an attempt failed, why a lookup was not answered.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import type * as Duration from "effect/Duration"
import * as Predicate from "effect/Predicate"
import type * as GrpcChannel from "./GrpcChannel.js"
import { formatMillis } from "./internal/shared/format.js"
import type * as Readiness from "./Readiness.js"

/**
 * Why a connection attempt failed, or why a connection was given up.
 *
 * An attempt fails with:
 * - `Refused`: the master's side said no: nothing listens on the port, or the
 *   connection was reset or closed before the HTTP/2 handshake finished.
 * - `HostUnreachable`: no route to the master's host.
 * - `NameNotResolved`: the master's name did not resolve.
 * - `TlsRefused`: the TLS handshake failed (a certificate not trusted, not for
 *   that name, or refused).
 * - `TransientFailure`: the channel failed for a reason grpc-js did not name
 *   in a way recognized here (`detail` has its words).
 * - `ConnectTimeout`: not READY within the connect timeout; `stage` says how
 *   far it got (`Connect`: TCP never answered; `Handshake`: the HTTP/2
 *   handshake never finished).
 * - `NotReady`: READY, but readiness did not pass within its bound; `check`
 *   says which check held it back.
 * - `Rejected`: the master refused the worker's credentials.
 * - `Shutdown`: the channel was shut down under the attempt.
 *
 * A Ready connection is given up with `Lost` (its channel left READY, or a
 * check found it not READY), `ProbeFailed` (the master stopped answering the
 * probe) or `Rejected`.
 *
 * @since 0.1.0
 * @category errors
 */
export class ConnectError extends Data.TaggedError("ConnectError")<{
  readonly reason: ConnectErrorReason
  readonly message: string
  /**
   * `ConnectTimeout`: how far the connection got.
   *
   * @since 0.2.0
   */
  readonly stage?: GrpcChannel.Stage | undefined
  /**
   * `NotReady`: the readiness check that held the attempt back.
   *
   * @since 0.2.0
   */
  readonly check?: Readiness.CheckName | undefined
  /**
   * For a channel that failed: grpc-js's last connection error, in its words.
   *
   * @since 0.2.0
   */
  readonly detail?: string | undefined
  /**
   * The error beneath it, where there is one: the `ReadinessTimeout`, the `ProbeFailed`, the refused call's
   * `GrpcError`, the check's `ChannelNotReady`.
   *
   * @since 0.3.0
   */
  readonly cause?: unknown
}> {}

/**
 * The reasons of {@link ConnectError}.
 *
 * @since 0.2.0
 * @category models
 */
export type ConnectErrorReason =
  | "Refused"
  | "HostUnreachable"
  | "NameNotResolved"
  | "TlsRefused"
  | "TransientFailure"
  | "ConnectTimeout"
  | "NotReady"
  | "Rejected"
  | "Shutdown"
  | "Lost"
  | "ProbeFailed"

/**
 * The connection's state. "Is a reconnection in progress" is
 * `state._tag === "Reconnecting"`; there is no other flag.
 *
 * - `Connecting`: the first attempt, before anything has failed.
 * - `Ready`: generation `generation` is connected and its clients registered, since `since` (epoch millis).
 * - `Reconnecting`: an outage began at `since`; attempt `attempt` of it is in progress.
 * - `Rejected`: the master refused this worker's credentials (UNAUTHENTICATED or
 *   PERMISSION_DENIED) at `since`; lookups fail at once, and the next try is at `retryAt`.
 * - `Closed`: the layer's scope closed, a bounded reconnect schedule gave up, or the supervisor died of a
 *   defect (a bug, logged at Error; restart the process).
 *
 * @since 0.1.0
 * @category models
 */
export type ConnectionState = Data.TaggedEnum<{
  Connecting: { readonly attempt: number }
  Ready: { readonly generation: number; readonly since: number }
  Reconnecting: { readonly attempt: number; readonly since: number; readonly lastError: ConnectError }
  Rejected: { readonly since: number; readonly retryAt: number; readonly lastError: ConnectError }
  Closed: { readonly lastError: ConnectError | undefined }
}>

/**
 * Constructors and matchers of {@link ConnectionState}.
 *
 * @since 0.1.0
 * @category models
 */
export const ConnectionState = Data.taggedEnum<ConnectionState>()

/**
 * A client lookup that could not be answered.
 *
 * - `Timeout`: no client was registered within the lookup wait (15 s, or 90 s while reconnecting).
 * - `Closed`: the connection is closed.
 * - `Rejected`: the master refused this worker's credentials; it fails at once.
 * - `UnknownService`: no service is registered under that key.
 *
 * @since 0.1.0
 * @category errors
 */
export class ClientUnavailable extends Data.TaggedError("ClientUnavailable")<{
  readonly reason: "Timeout" | "Closed" | "Rejected" | "UnknownService"
  readonly service: string
  readonly state: ConnectionState
  readonly waited: Duration.Duration
}> {
  override get message() {
    return `${this.service} client unavailable (${this.reason}) after ${
      formatMillis(this.waited)
    }, connection ${this.state._tag}`
  }
}

/**
 * Is this a `ClientUnavailable`?
 *
 * @since 0.3.0
 * @category guards
 */
export const isClientUnavailable = (u: unknown): u is ClientUnavailable => Predicate.isTagged(u, "ClientUnavailable")

/**
 * Is this a `ConnectError`?
 *
 * @since 0.3.0
 * @category guards
 */
export const isConnectError = (u: unknown): u is ConnectError => Predicate.isTagged(u, "ConnectError")

/**
 * The state in a few words, for log lines.
 *
 * @since 0.1.0
 * @category getters
 */
export const describe = (state: ConnectionState): string =>
  ConnectionState.$match(state, {
    Connecting: ({ attempt }) => `attempt ${attempt}`,
    Reconnecting: ({ attempt }) => `reconnection attempt ${attempt}`,
    Rejected: () => "rejected",
    Ready: ({ generation }) => `generation ${generation}`,
    Closed: () => "closed"
  })
