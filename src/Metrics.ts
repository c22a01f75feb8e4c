/**
 * The library's metrics, as Effect `Metric`s in the global registry: how
 * reconnections go (attempts, successes, registration time, time to the first
 * task after a reconnection, task-handler startup time) and what a dashboard of
 * a worker fleet needs. The health endpoint (`NodeHealth.layer`, or
 * `Health.serve` on a server of your own) serves them as Prometheus text; any
 * Effect metrics exporter can read them too.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"

// Seconds, from 5 ms to about 2 minutes: what a reconnection, a readiness wait or a lookup takes.
const seconds = MetricBoundaries.exponential({ start: 0.005, factor: 2, count: 15 })

const counter = (name: string, description: string) => Metric.counter(name, { description, incremental: true })
const gauge = (name: string, description: string) => Metric.gauge(name, { description })
const timing = (name: string, description: string) => Metric.histogram(name, seconds, description)

/**
 * @since 0.1.0
 * @category connection
 */
export const connectionAttempts = counter(
  "grpc_resilience_connection_attempts_total",
  "Connection attempts (first connection and reconnections)"
)

/**
 * @since 0.1.0
 * @category connection
 */
export const connectionSuccesses = counter("grpc_resilience_connection_successes_total", "Attempts that reached Ready")

/**
 * 1 for the state the connection is in, 0 for the others (tag `state`).
 *
 * @since 0.1.0
 * @category connection
 */
export const connectionState = gauge(
  "grpc_resilience_connection_state",
  "1 for the connection's current state (label state), 0 otherwise"
)

/**
 * @since 0.1.0
 * @category connection
 */
export const connectionGeneration = gauge(
  "grpc_resilience_connection_generation",
  "The connection generation now Ready (1 on the first connection, + 1 per reconnection)"
)

/**
 * Connections the master ended with GOAWAY "too_many_pings": its ping policy
 * refused the worker's keepalive. Each one doubles the interval of the
 * connections after it.
 *
 * @since 0.3.0
 * @category connection
 */
export const keepaliveRefusals = counter(
  "grpc_resilience_keepalive_refusals_total",
  "Connections the master ended with GOAWAY too_many_pings (keepalive more often than it allows)"
)

/**
 * @since 0.1.0
 * @category connection
 */
export const registrationSeconds = timing(
  "grpc_resilience_registration_seconds",
  "Time from the channel READY to the service clients registered"
)

/**
 * @since 0.1.0
 * @category readiness
 */
export const readinessSeconds = timing(
  "grpc_resilience_readiness_seconds",
  "Time readiness took to pass, after each (re)connect"
)

/**
 * @since 0.1.0
 * @category readiness
 */
export const readinessTimeouts = counter(
  "grpc_resilience_readiness_timeouts_total",
  "Readiness waits that reached their bound"
)

/**
 * @since 0.1.0
 * @category lookups
 */
export const lookupWaitSeconds = timing(
  "grpc_resilience_lookup_wait_seconds",
  "Time client lookups waited for a Ready connection (lookups answered at once are not counted)"
)

/**
 * @since 0.1.0
 * @category lookups
 */
export const lookupFailures = counter(
  "grpc_resilience_lookup_failures_total",
  "Client lookups that failed (label reason: Timeout, Closed, Rejected, UnknownService)"
)

/**
 * @since 0.1.0
 * @category calls
 */
export const retries = counter(
  "grpc_resilience_retries_total",
  "Retries of a failed effect by Retry.transient (label what: the call or lookup)"
)

/**
 * 1 for the breaker's current state, 0 for the others (tag `state`).
 *
 * @since 0.1.0
 * @category calls
 */
export const breakerState = gauge(
  "grpc_resilience_breaker_state",
  "1 for the circuit breaker's current state (label state), 0 otherwise"
)

/**
 * @since 0.1.0
 * @category tasks
 */
export const readyToFirstFetchSeconds = timing(
  "grpc_resilience_ready_to_first_fetch_seconds",
  "After a reconnection, time from Ready to the first task fetched"
)

/**
 * @since 0.1.0
 * @category tasks
 */
export const tasks = counter(
  "grpc_resilience_tasks_total",
  "Tasks by final status (label status: FINISHED, ERROR, CANCELLED)"
)

/**
 * @since 0.1.0
 * @category tasks
 */
export const fetchFailures = counter("grpc_resilience_fetch_failures_total", "Fetches that failed")

/**
 * @since 0.1.0
 * @category tasks
 */
export const outboxDepth = gauge("grpc_resilience_outbox_depth", "Status reports waiting in the outbox")

/**
 * Reports whose outbox write failed (disk full, read-only): held in memory
 * and written again until it works; no task is fetched meanwhile.
 *
 * @since 0.2.0
 * @category tasks
 */
export const outboxUnpersisted = gauge(
  "grpc_resilience_outbox_unpersisted",
  "Status reports the outbox could not store, held in memory and stored again until it can"
)

/**
 * @since 0.1.0
 * @category tasks
 */
export const startupSeconds = gauge(
  "grpc_resilience_task_handler_startup_seconds",
  "Time the task handler waited for readiness at start"
)

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

/**
 * Makes every series of `metrics` exist under the current metric labels,
 * without writing to it: a counter at 0, a histogram with no observation. A
 * series appears in a scrape only once it exists, and an alert on the rate of
 * a counter that has never moved would have nothing to read.
 *
 * @since 0.3.0
 * @category constructors
 */
export const atZero = (metrics: ReadonlyArray<Metric.Metric<any, any, unknown>>): Effect.Effect<void> =>
  Effect.forEach(metrics, (metric) => Metric.value(metric), { discard: true })

const lookupReasons = ["Timeout", "Closed", "Rejected", "UnknownService"] as const

/**
 * The series a connection writes, each at 0 from the connection's start
 * (under its `address` label).
 *
 * @since 0.3.0
 * @category connection
 */
export const connectionSeries: ReadonlyArray<Metric.Metric<any, any, unknown>> = [
  connectionAttempts,
  connectionSuccesses,
  keepaliveRefusals,
  registrationSeconds,
  readinessSeconds,
  readinessTimeouts,
  lookupWaitSeconds,
  ...lookupReasons.map((reason) => Metric.tagged(lookupFailures, "reason", reason))
]

/**
 * The series a task handler writes, each at 0 from its start (under its
 * `address` and `node` labels), the lookups its fibers make included.
 *
 * @since 0.3.0
 * @category tasks
 */
export const taskHandlerSeries: ReadonlyArray<Metric.Metric<any, any, unknown>> = [
  readyToFirstFetchSeconds,
  ...(["FINISHED", "ERROR", "CANCELLED"] as const).map((status) => Metric.tagged(tasks, "status", status)),
  fetchFailures,
  outboxDepth,
  outboxUnpersisted,
  startupSeconds,
  lookupWaitSeconds,
  ...lookupReasons.map((reason) => Metric.tagged(lookupFailures, "reason", reason))
]
