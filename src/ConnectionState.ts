/**
 * What the connection is doing, and the errors it reports: the state the
 * supervisor publishes, why an attempt failed, why a lookup was not answered.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import type * as Duration from "effect/Duration"
import { formatMillis } from "./internal/format.js"

/**
 * Why a connection attempt failed, or why a connection was given up as lost.
 *
 * @since 0.1.0
 * @category errors
 */
export class ConnectError extends Data.TaggedError("ConnectError")<{
  readonly reason: "ConnectTimeout" | "TransientFailure" | "Shutdown" | "NotReady" | "Lost" | "ProbeFailed" | "Rejected"
  readonly message: string
}> {}

/**
 * The connection's state. "Is a reconnection in progress" is
 * `state._tag === "Reconnecting"`; there is no other flag.
 *
 * - `Connecting`: the first attempt, before anything has failed.
 * - `Ready`: generation `generation` is connected and its clients registered, since `since` (epoch millis).
 * - `Reconnecting`: an outage began at `since`; attempt `attempt` of it is in progress.
 * - `Rejected`: the master refused this worker's credentials (UNAUTHENTICATED or
 *   PERMISSION_DENIED) at `since`; lookups fail at once, and the next try is at `retryAt`.
 * - `Closed`: the layer's scope closed, or a bounded reconnect schedule gave up.
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
    return `${this.service} client unavailable (${this.reason}) after ${formatMillis(this.waited)}, connection ${this.state._tag}`
  }
}

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

