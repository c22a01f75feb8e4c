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
import { ClientUnavailable, type ConnectionState } from "../ConnectionState.js"
import * as Metrics from "../Metrics.js"
import type * as Supervisor from "./supervisor.js"

export interface Options {
  readonly snapshot: SubscriptionRef.SubscriptionRef<Supervisor.Snapshot>
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
  { lookupTimeout, reconnectingLookupTimeout, services, snapshot }: Options,
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
      // The deadline follows the state: re-evaluated on every change during the wait.
      const limit = current.state._tag === "Reconnecting" ? reconnectingLookupTimeout : lookupTimeout
      const remaining = start + Duration.toMillis(limit) - (yield* Clock.currentTimeMillis)
      if (remaining <= 0) {
        return yield* unavailable("Timeout", current.state)
      }
      const seen = current
      const next = yield* snapshot.changes.pipe(
        Stream.filter((s) =>
          s !== seen
        ),
        Stream.runHead,
        Effect.timeoutOption(Duration.millis(remaining))
      )
      if (Option.isNone(next)) return yield* unavailable("Timeout", current.state)
      current = Option.getOrElse(next.value, () => current)
    }
  })
