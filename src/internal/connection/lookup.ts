/**
 * A client lookup: the link of the current generation at once when the
 * connection is `Ready`, else after a wait whose deadline follows the state
 * (short while connected or connecting, long while reconnecting), failing
 * with a typed `ClientUnavailable`.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import { ClientUnavailable, type ConnectionState } from "../../ConnectionState.js"
import * as Metrics from "../../Metrics.js"
import type * as Supervisor from "./supervisor.js"

export interface Options {
  readonly snapshot: SubscriptionRef.SubscriptionRef<Supervisor.Snapshot>
  /** The snapshot, published only when the link or the state's tag changes (`Supervisor.links`). */
  readonly links: SubscriptionRef.SubscriptionRef<Supervisor.Snapshot>
  readonly services: Readonly<Record<string, unknown>>
  readonly lookupTimeout: Duration.Duration
  readonly reconnectingLookupTimeout: Duration.Duration
  /** Wraps the wait (its metrics carry the connection's labels); not the lookup of a Ready link, which has none. */
  readonly waiting: <A, E>(wait: Effect.Effect<A, E>) => Effect.Effect<A, E>
}

/** The link of the current generation for the service `key`. */
export const link = (options: Options, key: string): Effect.Effect<Supervisor.Link, ClientUnavailable> =>
  Effect.flatMap(
    SubscriptionRef.get(options.snapshot),
    (now) =>
      now.link !== undefined && Object.hasOwn(options.services, key)
        ? Effect.succeed(now.link)
        : options.waiting(wait(options, key))
  )

const wait = (
  { links, lookupTimeout, reconnectingLookupTimeout, services, snapshot }: Options,
  key: string
): Effect.Effect<Supervisor.Link, ClientUnavailable> =>
  Effect.gen(function*() {
    const start = yield* Clock.currentTimeMillis
    const unavailable = (reason: ClientUnavailable["reason"], state: ConnectionState) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Metric.increment(Metric.tagged(Metrics.lookupFailures, "reason", reason)).pipe(
          Effect.zipRight(
            Effect.fail(new ClientUnavailable({ reason, service: key, state, waited: Duration.millis(now - start) }))
          )
        ))
    // The deadline follows the state: long while reconnecting, short otherwise.
    const limitOf = (state: ConnectionState) =>
      state._tag === "Reconnecting" ? reconnectingLookupTimeout : lookupTimeout
    // The wait is over when a link is published, the connection is closed or rejected, or the deadline changes:
    // each of them a change of the link or of the state's tag, so the wait follows `links`, which an attempt of a
    // reconnection does not wake.
    const decides = (s: Supervisor.Snapshot, limit: Duration.Duration) =>
      s.link !== undefined || s.state._tag === "Closed" || s.state._tag === "Rejected" || limitOf(s.state) !== limit
    let current = yield* SubscriptionRef.get(snapshot)
    if (!Object.hasOwn(services, key)) {
      return yield* unavailable("UnknownService", current.state)
    }
    while (true) {
      if (current.link !== undefined) {
        yield* Metric.update(Metrics.lookupWaitSeconds, ((yield* Clock.currentTimeMillis) - start) / 1000)
        return current.link
      }
      if (current.state._tag === "Closed") {
        return yield* unavailable("Closed", current.state)
      }
      if (current.state._tag === "Rejected") {
        return yield* unavailable("Rejected", current.state)
      }
      const limit = limitOf(current.state)
      const remaining = start + Duration.toMillis(limit) - (yield* Clock.currentTimeMillis)
      if (remaining <= 0) {
        return yield* unavailable("Timeout", (yield* SubscriptionRef.get(snapshot)).state)
      }
      // One timer per deadline, not per state change: attempt after attempt of a reconnection keeps the deadline,
      // and each would otherwise leave a timer behind for the clock to wake up to.
      const next = yield* links.changes.pipe(
        Stream.tap((s) =>
          Effect.sync(() => {
            current = s
          })
        ),
        Stream.filter((s) =>
          decides(s, limit)
        ),
        Stream.runHead,
        Effect.timeoutOption(Duration.millis(remaining))
      )
      // The error names the state now, not the last one `links` published: the attempt under way.
      if (Option.isNone(next)) return yield* unavailable("Timeout", (yield* SubscriptionRef.get(snapshot)).state)
    }
  })
