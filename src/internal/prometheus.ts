/**
 * The Prometheus text exposition format, version 0.0.4, of a snapshot of
 * Effect's metrics: a pure function from `Metric.snapshot`'s pairs to text.
 *
 * @since 0.1.0
 */
import * as MetricKeyType from "effect/MetricKeyType"
import type * as MetricPair from "effect/MetricPair"
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

type Type = "counter" | "gauge" | "histogram" | "summary"

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
  readonly series: Map<string, ReadonlyArray<string>>
}

const byKey = <A>([a]: readonly [string, A], [b]: readonly [string, A]) => (a < b ? -1 : a > b ? 1 : 0)

/**
 * Every metric of the snapshot in the text format: one family per sanitized
 * name, with its `# HELP` (when the metric has a description) and `# TYPE`,
 * then one series per tag set, families and series sorted. Effect counters
 * that are `incremental` are counters, other counters (they may decrement)
 * gauges; frequencies are counters with a `key` label; histograms are
 * cumulative `_bucket{le=...}` lines ending at `+Inf`, `_sum` and `_count`;
 * summaries are `{quantile=...}` lines (`NaN` before any value), `_sum` and
 * `_count`. A metric whose sanitized name is taken by one of another type, or
 * whose tag set repeats a series, is left out with a comment line, since a
 * scraper refuses the whole text for it.
 *
 * @since 0.1.0
 * @category encoding
 */
export const format = (snapshot: ReadonlyArray<MetricPair.MetricPair.Untyped>): string => {
  const families = new Map<string, Family>()
  const skipped: Array<string> = []
  for (const pair of snapshot) {
    const key = pair.metricKey
    const labels: Labels = new Map(key.tags.map((tag) => [labelName(tag.key), tag.value]))
    const found = series(pair, labels)
    if (found === undefined) continue
    const name = metricName(key.name)
    const family = families.get(name) ?? { type: found.type, help: undefined, series: new Map() }
    families.set(name, family)
    const id = renderLabels(labels)
    if (family.type !== found.type || family.series.has(id)) {
      const why = family.type !== found.type ? `the name is taken by a ${family.type}` : "its series is there already"
      skipped.push(`# skipped ${escapeHelp(JSON.stringify(key.name))} (${found.type}${id}): ${why}`)
      continue
    }
    family.help ??= Option.getOrUndefined(key.description)
    family.series.set(id, found.lines(name))
  }
  const lines: Array<string> = []
  for (const [name, family] of [...families].sort(byKey)) {
    if (family.help !== undefined && family.help !== "") lines.push(`# HELP ${name} ${escapeHelp(family.help)}`)
    lines.push(`# TYPE ${name} ${family.type}`)
    for (const [, samples] of [...family.series].sort(byKey)) lines.push(...samples)
  }
  lines.push(...skipped)
  return lines.length === 0 ? "" : `${lines.join("\n")}\n`
}
