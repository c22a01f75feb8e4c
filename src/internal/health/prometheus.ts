/**
 * The Prometheus text exposition format, version 0.0.4, of a snapshot of
 * Effect's metrics: a pure function from `Metric.snapshot`'s pairs to text.
 *
 * @since 0.1.0
 */
import * as MetricBoundaries from "effect/MetricBoundaries"
import * as MetricKey from "effect/MetricKey"
import * as MetricKeyType from "effect/MetricKeyType"
import type * as MetricLabel from "effect/MetricLabel"
import * as MetricPair from "effect/MetricPair"
import * as MetricState from "effect/MetricState"
import * as Option from "effect/Option"

/**
 * The `Content-Type` of the format.
 *
 * @since 0.1.0
 * @category constants
 */
export const contentType = "text/plain; version=0.0.4; charset=utf-8"

/**
 * A metric name Prometheus accepts: `[a-zA-Z_:][a-zA-Z0-9_:]*`, every other
 * character replaced by `_`.
 *
 * @since 0.1.0
 * @category encoding
 */
export const metricName = (name: string): string => {
  const replaced = name.replace(/[^a-zA-Z0-9_:]/gu, "_")
  return replaced === "" || /^[0-9]/.test(replaced) ? `_${replaced}` : replaced
}

/**
 * A label name Prometheus accepts: `[a-zA-Z_][a-zA-Z0-9_]*`.
 *
 * @since 0.1.0
 * @category encoding
 */
export const labelName = (name: string): string => {
  const replaced = name.replace(/[^a-zA-Z0-9_]/gu, "_")
  return replaced === "" || /^[0-9]/.test(replaced) ? `_${replaced}` : replaced
}

/**
 * A label value inside its double quotes: backslash, double quote and line feed escaped.
 */
const escapeLabelValue = (value: string): string =>
  value.replace(/\\/g, "\\\\").replace(/"/g, "\\\"").replace(/\n/g, "\\n")

/**
 * A `# HELP` text: backslash and line feed escaped (quotes stay as they are).
 */
const escapeHelp = (text: string): string => text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")

/**
 * A sample value as Go's `ParseFloat` reads it: `+Inf`, `-Inf`, `NaN`, or the number.
 */
const formatValue = (value: number | bigint): string => {
  if (typeof value === "bigint") return value.toString()
  if (Number.isNaN(value)) return "NaN"
  if (value === Number.POSITIVE_INFINITY) return "+Inf"
  if (value === Number.NEGATIVE_INFINITY) return "-Inf"
  return String(value)
}

/**
 * The type of a family, as its `# TYPE` line says it.
 *
 * @since 0.2.0
 * @category models
 */
export type Type = "counter" | "gauge" | "histogram" | "summary"

/**
 * The name of a family of the given type, from an Effect metric's name: sanitized
 * ({@link metricName}), then a counter's ends in `_total` and any other's does
 * not, since Prometheus (and its linter) read `_total` as a counter's.
 *
 * @since 0.2.0
 * @category encoding
 */
export const familyName = (name: string, type: Type): string => {
  const sanitized = metricName(name)
  const total = sanitized.endsWith("_total")
  if (type === "counter") return total ? sanitized : `${sanitized}_total`
  return total && sanitized.length > "_total".length ? sanitized.slice(0, -"_total".length) : sanitized
}

// Effect's runtime records these for every fiber (RuntimeMetrics is on by default), without descriptions, under
// the metric labels of the fiber counted; each is served under the name and the description here.
const runtimeMetrics: ReadonlyMap<string, { readonly name: string; readonly help: string }> = new Map([
  ["effect_fiber_started", { name: "effect_fiber_started", help: "Fibers the Effect runtime started" }],
  ["effect_fiber_active", {
    name: "effect_fiber_active",
    help: "Fibers of the Effect runtime started and not yet ended"
  }],
  ["effect_fiber_successes", { name: "effect_fiber_successes", help: "Fibers that ended with a success" }],
  // Effect counts an interrupted fiber here, and interrupting is how a program stops the fibers it no longer needs.
  ["effect_fiber_failures", {
    name: "effect_fiber_failed_or_interrupted",
    help: "Fibers that ended with a failure or an interruption (most interruptions are fibers stopped on purpose)"
  }],
  ["effect_fiber_lifetimes", { name: "effect_fiber_lifetimes", help: "How long fibers ran, from start to end" }]
])

const sumStates = (a: MetricState.MetricState.Untyped, b: MetricState.MetricState.Untyped) => {
  if (MetricState.isCounterState(a) && MetricState.isCounterState(b)) {
    return MetricState.counter((a.count as number) + (b.count as number))
  }
  if (MetricState.isGaugeState(a) && MetricState.isGaugeState(b)) {
    return MetricState.gauge((a.value as number) + (b.value as number))
  }
  if (MetricState.isHistogramState(a) && MetricState.isHistogramState(b) && a.buckets.length === b.buckets.length) {
    return MetricState.histogram({
      buckets: a.buckets.map(([bound, count], i) => [bound, count + b.buckets[i]![1]] as const),
      count: a.count + b.count,
      min: Math.min(a.min, b.min),
      max: Math.max(a.max, b.max),
      sum: a.sum + b.sum
    })
  }
  return a
}

const renamed = (key: MetricKey.MetricKey.Untyped, name: string, tags: ReadonlyArray<MetricLabel.MetricLabel>) => {
  const description = Option.getOrUndefined(key.description)
  const type = key.keyType
  const base: MetricKey.MetricKey.Untyped = MetricKeyType.isCounterKey(type)
    ? MetricKey.counter(name, { description, incremental: type.incremental })
    : MetricKeyType.isHistogramKey(type)
    ? MetricKey.histogram(name, type.boundaries, description)
    : MetricKey.gauge(name, { description })
  return MetricKey.taggedWithLabels(base, tags)
}

/**
 * Effect's runtime series are the process's: the labels of the fibers they
 * count (a connection's `address`, a task handler's `node`) are dropped and the
 * series that differ only by them summed; each gets its name from
 * `runtimeMetrics`.
 */
const perProcess = (
  snapshot: ReadonlyArray<MetricPair.MetricPair.Untyped>
): ReadonlyArray<MetricPair.MetricPair.Untyped> => {
  const merged = new Map<string, MetricPair.MetricPair.Untyped>()
  const others: Array<MetricPair.MetricPair.Untyped> = []
  for (const pair of snapshot) {
    const runtime = runtimeMetrics.get(pair.metricKey.name)
    if (runtime === undefined) {
      others.push(pair)
      continue
    }
    const kept = pair.metricKey.tags.filter((tag) => tag.key === "time_unit")
    const id = `${runtime.name}${kept.map((tag) => `,${tag.value}`).join("")}`
    const before = merged.get(id)
    merged.set(
      id,
      before === undefined
        ? MetricPair.unsafeMake(renamed(pair.metricKey, runtime.name, kept), pair.metricState)
        : MetricPair.unsafeMake(before.metricKey, sumStates(before.metricState, pair.metricState))
    )
  }
  return [...others, ...merged.values()]
}

const runtimeHelp: ReadonlyMap<string, string> = new Map(
  [...runtimeMetrics.values()].map(({ help, name }) => [name, help])
)

/**
 * Effect's fiber lifetimes histogram, in milliseconds under a `time_unit` tag,
 * in Prometheus' base unit instead: `effect_fiber_lifetime_seconds`, bounds and
 * sum divided by 1000 (the counts do not change), the tag dropped.
 */
const lifetimesInSeconds = (pair: MetricPair.MetricPair.Untyped): MetricPair.MetricPair.Untyped => {
  const { metricKey: key, metricState: state } = pair
  const milliseconds = key.tags.some((tag) => tag.key === "time_unit" && tag.value === "milliseconds")
  if (key.name !== "effect_fiber_lifetimes" || !milliseconds || !MetricState.isHistogramState(state)) return pair
  const buckets = state.buckets.map(([bound, count]) => [bound / 1000, count] as const)
  const seconds = MetricKey.histogram(
    "effect_fiber_lifetime_seconds",
    MetricBoundaries.fromIterable(buckets.map(([bound]) => bound)),
    runtimeHelp.get(key.name)
  ).pipe(MetricKey.taggedWithLabels(key.tags.filter((tag) => tag.key !== "time_unit")))
  return MetricPair.unsafeMake(
    seconds,
    MetricState.histogram({
      buckets,
      count: state.count,
      min: state.min / 1000,
      max: state.max / 1000,
      sum: state.sum / 1000
    })
  )
}

// Every family gets a `# HELP`: the first description among its metrics, else Effect's runtime's, else its Effect name.
const descriptionOf = (key: MetricKey.MetricKey.Untyped): string | undefined => {
  const description = Option.getOrUndefined(key.description)
  return description === undefined || description.trim() === "" ? runtimeHelp.get(key.name) : description
}
const fallbackHelp = (key: MetricKey.MetricKey.Untyped): string =>
  `${key.name} (an Effect metric without a description)`

type Labels = ReadonlyMap<string, string>

interface Series {
  readonly type: Type
  readonly lines: (name: string) => ReadonlyArray<string>
}

const renderLabels = (labels: Labels): string => {
  if (labels.size === 0) return ""
  const pairs: Array<string> = []
  for (const [name, value] of labels) pairs.push(`${name}="${escapeLabelValue(value)}"`)
  return `{${pairs.join(",")}}`
}

// A later tag with the same name wins, as does the label the type adds (`le`, `quantile`, `key`).
const withLabel = (labels: Labels, name: string, value: string): Labels => new Map([...labels, [name, value]])

const sample = (name: string, labels: Labels, value: number | bigint) =>
  `${name}${renderLabels(labels)} ${formatValue(value)}`

const series = (pair: MetricPair.MetricPair.Untyped, labels: Labels): Series | undefined => {
  const { metricKey: key, metricState: state } = pair
  if (MetricState.isCounterState(state)) {
    // An Effect counter may go down unless it is incremental; a Prometheus counter never does.
    const monotonic = MetricKeyType.isCounterKey(key.keyType) && key.keyType.incremental
    return { type: monotonic ? "counter" : "gauge", lines: (name) => [sample(name, labels, state.count)] }
  }
  if (MetricState.isGaugeState(state)) {
    return { type: "gauge", lines: (name) => [sample(name, labels, state.value)] }
  }
  if (MetricState.isFrequencyState(state)) {
    const words = [...state.occurrences].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    return {
      type: "counter",
      lines: (name) => words.map(([word, count]) => sample(name, withLabel(labels, "key", word), count))
    }
  }
  if (MetricState.isHistogramState(state)) {
    return {
      type: "histogram",
      lines: (name) => {
        // Effect's histogram buckets are already cumulative (count of values <= boundary), ending at +Inf.
        const bucket = (le: string, count: number) => sample(`${name}_bucket`, withLabel(labels, "le", le), count)
        const buckets = state.buckets.map(([le, count]) => bucket(formatValue(le), count))
        const last = state.buckets[state.buckets.length - 1]
        if (last === undefined || last[0] !== Number.POSITIVE_INFINITY) {
          buckets.push(bucket("+Inf", state.count))
        }
        return [...buckets, sample(`${name}_sum`, labels, state.sum), sample(`${name}_count`, labels, state.count)]
      }
    }
  }
  if (MetricState.isSummaryState(state)) {
    return {
      type: "summary",
      lines: (name) => [
        ...state.quantiles.map(([quantile, value]) =>
          sample(name, withLabel(labels, "quantile", formatValue(quantile)), Option.getOrElse(value, () => Number.NaN))
        ),
        sample(`${name}_sum`, labels, state.sum),
        sample(`${name}_count`, labels, state.count)
      ]
    }
  }
  return undefined
}

interface Family {
  readonly type: Type
  help: string | undefined
  readonly fallback: string
  readonly series: Map<string, ReadonlyArray<string>>
}

const byKey = <A>([a]: readonly [string, A], [b]: readonly [string, A]) => (a < b ? -1 : a > b ? 1 : 0)

/**
 * Every metric of the snapshot in the text format, in the shape Prometheus'
 * linter (`promtool check metrics`) accepts: one family per name (see
 * {@link familyName}: a counter's ends in `_total`, no other's does) with its
 * `# HELP` and `# TYPE`, then one series per tag set, families and series
 * sorted. The `# HELP` is the first description among the family's metrics;
 * Effect's runtime metrics (`effect_fiber_*`), which have none, get one of
 * ours, any other metric its Effect name. Effect counters that are
 * `incremental` are counters, other counters (they may decrement) gauges;
 * frequencies are counters with a `key` label; histograms are cumulative
 * `_bucket{le=...}` lines ending at `+Inf`, `_sum` and `_count`; summaries are
 * `{quantile=...}` lines (`NaN` before any value), `_sum` and `_count`.
 * Effect's runtime series are the process's, without the labels of the
 * fibers they count; its failures, which count interruptions, are served as
 * `effect_fiber_failed_or_interrupted_total`, and its fiber lifetimes
 * histogram, in milliseconds, in seconds as `effect_fiber_lifetime_seconds`. A metric whose family name is taken by one
 * of another type, or whose tag set repeats a series, is left out with a
 * comment line, since a scraper refuses the whole text for it.
 *
 * @since 0.1.0
 * @category encoding
 */
export const format = (snapshot: ReadonlyArray<MetricPair.MetricPair.Untyped>): string => {
  const families = new Map<string, Family>()
  const skipped: Array<string> = []
  for (const original of perProcess(snapshot)) {
    const pair = lifetimesInSeconds(original)
    const key = pair.metricKey
    const labels: Labels = new Map(key.tags.map((tag) => [labelName(tag.key), tag.value]))
    const found = series(pair, labels)
    if (found === undefined) continue
    const name = familyName(key.name, found.type)
    const family = families.get(name) ?? {
      type: found.type,
      help: undefined,
      fallback: fallbackHelp(key),
      series: new Map()
    }
    families.set(name, family)
    const id = renderLabels(labels)
    if (family.type !== found.type || family.series.has(id)) {
      const why = family.type !== found.type ? `the name is taken by a ${family.type}` : "its series is there already"
      skipped.push(`# skipped ${escapeHelp(JSON.stringify(key.name))} (${found.type}${id}): ${why}`)
      continue
    }
    family.help ??= descriptionOf(key)
    family.series.set(id, found.lines(name))
  }
  const lines: Array<string> = []
  for (const [name, family] of [...families].sort(byKey)) {
    lines.push(`# HELP ${name} ${escapeHelp(family.help ?? family.fallback)}`)
    lines.push(`# TYPE ${name} ${family.type}`)
    for (const [, samples] of [...family.series].sort(byKey)) lines.push(...samples)
  }
  lines.push(...skipped)
  return lines.length === 0 ? "" : `${lines.join("\n")}\n`
}
