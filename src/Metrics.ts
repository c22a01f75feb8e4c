/**
 * The library's metrics, as Effect `Metric`s in the global registry: what the
 * seed asked to watch (reconnection success, registration time, time to the
 * first task after a reconnection, task-handler startup time) and what a
 * dashboard of a worker fleet needs. `Health.layer` serves them as Prometheus
 * text; any Effect metrics exporter can read them too.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"

// Seconds, from 5 ms to about 2 minutes: what a reconnection, a readiness wait or a lookup takes.
const seconds = MetricBoundaries.exponential({ start: 0.005, factor: 2, count: 15 })

/**
 * @since 0.1.0
 * @category connection
 */
export const connectionAttempts = Metric.counter("grpc_resilience_connection_attempts_total", {
  description: "Connection attempts (first connection and reconnections)",
  incremental: true
})

/**
 * @since 0.1.0
 * @category connection
 */
export const connectionSuccesses = Metric.counter("grpc_resilience_connection_successes_total", {
  description: "Attempts that reached Ready",
  incremental: true
})

/**
 * 1 for the state the connection is in, 0 for the others (tag `state`).
 *
 * @since 0.1.0
 * @category connection
 */
export const connectionState = Metric.gauge("grpc_resilience_connection_state", {
  description: "1 for the connection's current state (label state), 0 otherwise"
})

/**
 * @since 0.1.0
 * @category connection
 */
export const connectionGeneration = Metric.gauge("grpc_resilience_connection_generation", {
  description: "The connection generation now Ready (1 on the first connection, + 1 per reconnection)"
})

/**
 * @since 0.1.0
 * @category connection
 */
export const registrationSeconds = Metric.histogram(
  "grpc_resilience_registration_seconds",
  seconds,
  "Time from the channel READY to the service clients registered"
)

/**
 * @since 0.1.0
 * @category readiness
 */
export const readinessSeconds = Metric.histogram(
  "grpc_resilience_readiness_seconds",
  seconds,
  "Time readiness took to pass, after each (re)connect"
)

/**
 * @since 0.1.0
 * @category readiness
 */
export const readinessTimeouts = Metric.counter("grpc_resilience_readiness_timeouts_total", {
  description: "Readiness waits that reached their bound",
  incremental: true
})

/**
 * @since 0.1.0
 * @category lookups
 */
export const lookupWaitSeconds = Metric.histogram(
  "grpc_resilience_lookup_wait_seconds",
  seconds,
  "Time client lookups waited for a Ready connection (lookups answered at once are not counted)"
)

/**
 * @since 0.1.0
 * @category lookups
 */
export const lookupFailures = Metric.counter("grpc_resilience_lookup_failures_total", {
  description: "Client lookups that failed (label reason: Timeout, Closed, Rejected, UnknownService)",
  incremental: true
})

/**
 * @since 0.1.0
 * @category calls
 */
export const retries = Metric.counter("grpc_resilience_retries_total", {
  description: "Retries of a failed effect by Retry.transient (label what: the call or lookup)",
  incremental: true
})

/**
 * 1 for the breaker's current state, 0 for the others (tag `state`).
 *
 * @since 0.1.0
 * @category calls
 */
export const breakerState = Metric.gauge("grpc_resilience_breaker_state", {
  description: "1 for the circuit breaker's current state (label state), 0 otherwise"
})

/**
 * @since 0.1.0
 * @category tasks
 */
export const readyToFirstFetchSeconds = Metric.histogram(
  "grpc_resilience_ready_to_first_fetch_seconds",
  seconds,
  "After a reconnection, time from Ready to the first task fetched"
)

/**
 * @since 0.1.0
 * @category tasks
 */
export const tasks = Metric.counter("grpc_resilience_tasks_total", {
  description: "Tasks by final status (label status: FINISHED, ERROR, CANCELLED)",
  incremental: true
})

/**
 * @since 0.1.0
 * @category tasks
 */
export const fetchFailures = Metric.counter("grpc_resilience_fetch_failures_total", {
  description: "Fetches that failed",
  incremental: true
})

/**
 * @since 0.1.0
 * @category tasks
 */
export const outboxDepth = Metric.gauge("grpc_resilience_outbox_depth", {
  description: "Status reports waiting in the outbox"
})

/**
 * @since 0.1.0
 * @category tasks
 */
export const startupSeconds = Metric.gauge("grpc_resilience_task_handler_startup_seconds", {
  description: "Time the task handler waited for readiness at start"
})

/**
 * Sets a one-hot state gauge: 1 for `current`, 0 for every other state.
 *
 * @since 0.1.0
 * @category constructors
 */
export const oneHot = (
  gauge: Metric.Metric.Gauge<number>,
  states: ReadonlyArray<string>,
  current: string
): Effect.Effect<void> =>
  Effect.forEach(states, (state) => Metric.set(Metric.tagged(gauge, "state", state), state === current ? 1 : 0), {
    discard: true
  })
