/**
 * What a demo or a benchmark saw happen, and when: events on named lanes
 * (Network, Connection, Task...), printed as timestamped lines and drawn as a
 * Gantt chart in SVG. An event may start a phase of its lane (it lasts until
 * the lane's next phase) and may be a milestone drawn across every lane.
 *
 * The formatting and the rendering are pure functions; `make` is a small
 * recorder that stamps events with the `Clock`, so `TestClock` drives it.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Ref from "effect/Ref"

/**
 * How a phase is drawn: its colour says whether it is good news.
 *
 * @since 0.1.0
 * @category models
 */
export type Tone = "good" | "fault" | "waiting" | "active" | "done" | "neutral"

/**
 * @since 0.1.0
 * @category models
 */
export interface Phase {
  readonly name: string
  readonly tone: Tone
}

/**
 * One thing that happened.
 *
 * @since 0.1.0
 * @category models
 */
export interface Event {
  /** Milliseconds since the timeline's start. */
  readonly at: number
  /** The order of recording: breaks ties between events of the same millisecond. */
  readonly seq: number
  readonly lane: string
  /** What is printed. */
  readonly text: string
  /** The lane enters this phase at `at`, until its next phase or the end. */
  readonly phase?: Phase | undefined
  /** Draws a marker across every lane with this short label. */
  readonly milestone?: string | undefined
}

/**
 * A phase of one lane, from `from` to `to` (milliseconds since the start).
 *
 * @since 0.1.0
 * @category models
 */
export interface Span {
  readonly lane: string
  readonly name: string
  readonly tone: Tone
  readonly from: number
  readonly to: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Milestone {
  readonly at: number
  readonly label: string
}

/**
 * What `renderSvg` draws: one row per lane, in order, over `[0, end]` milliseconds.
 *
 * @since 0.1.0
 * @category models
 */
export interface Chart {
  readonly title: string
  readonly subtitle?: string | undefined
  readonly lanes: ReadonlyArray<string>
  readonly spans: ReadonlyArray<Span>
  readonly milestones: ReadonlyArray<Milestone>
  readonly end: number
}

// -------------------------------------------------------------------------------------------------
// Formatting
// -------------------------------------------------------------------------------------------------

/**
 * Elapsed time as `mm:ss.SSS`, e.g. `00:03.012`; negative times read as zero.
 *
 * @since 0.1.0
 * @category formatting
 */
export const formatElapsed = (millis: number): string => {
  const total = Math.max(0, Math.round(millis))
  const minutes = Math.floor(total / 60_000)
  const seconds = Math.floor(total / 1000) % 60
  const pad = (n: number, width: number) => String(n).padStart(width, "0")
  return `${pad(minutes, 2)}:${pad(seconds, 2)}.${pad(total % 1000, 3)}`
}

/**
 * A duration for a person: `850 ms` under a second, else seconds to `digits`
 * decimals (`1.3 s`; more digits where a threshold is near).
 *
 * @since 0.1.0
 * @category formatting
 */
export const formatSeconds = (millis: number, digits = 1): string => {
  const rounded = Math.round(millis)
  return Math.abs(rounded) < 1000 ? `${rounded} ms` : `${(rounded / 1000).toFixed(digits)} s`
}

/**
 * One printed line: `00:03.012  Connection  connected (generation 1)`.
 *
 * @since 0.1.0
 * @category formatting
 */
export const line = (event: Event, laneWidth = 10): string =>
  `${formatElapsed(event.at)}  ${event.lane.padEnd(laneWidth)}  ${event.text}`

/**
 * Events by time, then by order of recording.
 *
 * @since 0.1.0
 * @category ordering
 */
export const order = (events: ReadonlyArray<Event>): ReadonlyArray<Event> =>
  [...events].sort((a, b) => a.at - b.at || a.seq - b.seq)

// -------------------------------------------------------------------------------------------------
// From events to a chart
// -------------------------------------------------------------------------------------------------

/**
 * The phases of every lane, up to `end`. A phase repeated (same name and
 * tone) continues the one before; a phase of no length is dropped.
 *
 * @since 0.1.0
 * @category charts
 */
export const spans = (events: ReadonlyArray<Event>, end: number): ReadonlyArray<Span> => {
  const open = new Map<string, { name: string; tone: Tone; from: number }>()
  const result: Array<Span> = []
  const close = (lane: string, to: number) => {
    const current = open.get(lane)
    if (current !== undefined && to > current.from) result.push({ lane, ...current, to })
  }
  for (const event of order(events)) {
    if (event.phase === undefined) continue
    const current = open.get(event.lane)
    if (current !== undefined && current.name === event.phase.name && current.tone === event.phase.tone) continue
    const at = Math.max(0, event.at)
    close(event.lane, at)
    open.set(event.lane, { name: event.phase.name, tone: event.phase.tone, from: at })
  }
  for (const lane of open.keys()) close(lane, end)
  return result.sort((a, b) => a.from - b.from)
}

/**
 * @since 0.1.0
 * @category charts
 */
export const milestones = (events: ReadonlyArray<Event>): ReadonlyArray<Milestone> =>
  order(events).flatMap((event) =>
    event.milestone === undefined ? [] : [{ at: Math.max(0, event.at), label: event.milestone }]
  )

/**
 * The chart of a timeline: lanes with a phase, in order of their first event
 * unless `lanes` says otherwise; it ends at `end`, by default the last event.
 *
 * @since 0.1.0
 * @category charts
 */
export const chart = (
  events: ReadonlyArray<Event>,
  options: {
    readonly title: string
    readonly subtitle?: string | undefined
    readonly lanes?: ReadonlyArray<string> | undefined
    readonly end?: number | undefined
  }
): Chart => {
  const ordered = order(events)
  const end = Math.max(options.end ?? 0, ...ordered.map((event) => event.at), 1)
  const lanes = options.lanes ??
    [...new Set(ordered.filter((event) => event.phase !== undefined).map((event) => event.lane))]
  return {
    title: options.title,
    subtitle: options.subtitle,
    lanes,
    spans: spans(ordered, end).filter((span) => lanes.includes(span.lane)),
    milestones: milestones(ordered),
    end
  }
}

// -------------------------------------------------------------------------------------------------
// SVG
// -------------------------------------------------------------------------------------------------

const entities: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&apos;" }

/**
 * Text safe inside an SVG element or a double-quoted attribute.
 *
 * @since 0.1.0
 * @category rendering
 */
export const escapeXml = (text: string): string => text.replace(/[&<>"']/g, (c) => entities[c]!)

/**
 * Levels for labels on one line so that none overlaps another on its level:
 * each label (its left edge and width, in any order) takes the lowest level free at its left edge.
 *
 * @since 0.1.0
 * @category rendering
 */
export const stagger = (
  labels: ReadonlyArray<{ readonly left: number; readonly width: number }>,
  gap = 6
): ReadonlyArray<number> => {
  const rightEdges: Array<number> = []
  const levels: Array<number> = new Array(labels.length).fill(0)
  const byLeft = labels.map((label, index) => ({ ...label, index })).sort((a, b) => a.left - b.left)
  for (const label of byLeft) {
    let level = rightEdges.findIndex((right) => right + gap <= label.left)
    if (level === -1) level = rightEdges.length
    rightEdges[level] = label.left + label.width
    levels[label.index] = level
  }
  return levels
}

/**
 * The distance between ticks of an axis over `end` milliseconds: a round
 * number of seconds giving at most `maxTicks` intervals.
 *
 * @since 0.1.0
 * @category rendering
 */
export const tickStep = (end: number, maxTicks = 12): number => {
  const steps = [100, 200, 500, 1000, 2000, 5000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000]
  return steps.find((step) => end / step <= maxTicks) ?? Math.ceil(end / maxTicks / 600_000) * 600_000
}

const palette: Record<Tone, { readonly fill: string; readonly text: string }> = {
  good: { fill: "#81c784", text: "#123d18" },
  fault: { fill: "#e53935", text: "#ffffff" },
  waiting: { fill: "#ffca28", text: "#3e2f00" },
  active: { fill: "#1e88e5", text: "#ffffff" },
  done: { fill: "#2e7d32", text: "#ffffff" },
  neutral: { fill: "#cfd8dc", text: "#263238" }
}

// An estimate of a label's width: the SVG is never measured, so this errs wide.
const textWidth = (text: string, size: number) => text.length * size * 0.56

/**
 * The label shortened to fit `width` pixels, with an ellipsis; empty when
 * fewer than three characters would be left (the tooltip still has it all).
 *
 * @since 0.1.0
 * @category rendering
 */
export const fit = (label: string, width: number, size: number): string => {
  if (textWidth(label, size) <= width) return label
  const chars = Math.floor(width / (size * 0.56)) - 1
  return chars < 3 ? "" : `${label.slice(0, chars).trimEnd()}\u2026`
}

const num = (n: number) => String(Math.round(n * 10) / 10)

// Elements are built, never concatenated by hand, so every attribute value is escaped.
type Attributes = Readonly<Record<string, string | number>>
const attributes = (a: Attributes) =>
  Object.entries(a)
    .map(([name, value]) => ` ${name}="${typeof value === "number" ? num(value) : escapeXml(value)}"`)
    .join("")
const empty = (name: string, a: Attributes) => `<${name}${attributes(a)}/>`
const element = (name: string, a: Attributes, content: string) => `<${name}${attributes(a)}>${content}</${name}>`
const text = (a: Attributes, content: string) => element("text", a, escapeXml(content))
const title = (content: string) => element("title", {}, escapeXml(content))

const geometry = { width: 1000, left: 120, right: 28, rowHeight: 40, barHeight: 24, labelRow: 16, font: 12 } as const

/**
 * The chart as a standalone SVG document: a row per lane with its phases as
 * labelled bars, dashed milestone markers with staggered labels, an x axis in
 * seconds. Hovering a bar or a marker shows its exact times.
 *
 * @since 0.1.0
 * @category rendering
 */
export const renderSvg = (chart: Chart): string => {
  const { width, left, right, rowHeight, barHeight, labelRow, font } = geometry
  const end = Math.max(chart.end, 1)
  const plot = width - left - right
  const x = (millis: number) => left + (Math.min(Math.max(millis, 0), end) / end) * plot

  const marks = chart.milestones.map((milestone) => {
    const at = x(milestone.at)
    const w = textWidth(milestone.label, font - 1) + 8
    // A label that would run off the right edge is drawn to the left of its marker.
    const flip = at + w > width - 4
    return { ...milestone, x: at, left: flip ? at - w : at, width: w, flip }
  })
  const levels = stagger(marks)
  const labelLevels = marks.length === 0 ? 0 : Math.max(...levels) + 1
  const headerTop = chart.subtitle === undefined ? 40 : 58
  const rowsTop = headerTop + labelLevels * labelRow + 10
  const rowsBottom = rowsTop + chart.lanes.length * rowHeight
  const height = rowsBottom + 48

  const out: Array<string> = [
    `<svg${
      attributes({
        xmlns: "http://www.w3.org/2000/svg",
        width,
        height,
        viewBox: `0 0 ${width} ${height}`,
        "font-family": "system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif",
        "font-size": font
      })
    }>`,
    title(chart.title),
    empty("rect", { x: 0, y: 0, width, height, fill: "#ffffff" }),
    text({ x: 16, y: 24, "font-size": 16, "font-weight": "bold", fill: "#212121" }, chart.title)
  ]
  if (chart.subtitle !== undefined) out.push(text({ x: 16, y: 44, "font-size": 13, fill: "#424242" }, chart.subtitle))

  // The axis: a light grid line and a label per tick.
  const step = tickStep(end)
  out.push(`<g class="axis" fill="#616161" stroke="#eeeeee">`)
  for (let tick = 0; tick <= end + 1e-6; tick += step) {
    out.push(
      empty("line", { x1: x(tick), y1: rowsTop, x2: x(tick), y2: rowsBottom }),
      text({ x: x(tick), y: rowsBottom + 16, "text-anchor": "middle", stroke: "none" }, `${num(tick / 1000)} s`)
    )
  }
  out.push(
    empty("line", { x1: left, y1: rowsBottom, x2: width - right, y2: rowsBottom, stroke: "#9e9e9e" }),
    text(
      { x: left + plot / 2, y: rowsBottom + 36, "text-anchor": "middle", stroke: "none" },
      "seconds since the start"
    ),
    `</g>`
  )

  // The lanes and their phases.
  chart.lanes.forEach((lane, row) => {
    const barTop = rowsTop + row * rowHeight + (rowHeight - barHeight) / 2
    const baseline = barTop + barHeight / 2 + font * 0.35
    out.push(
      `<g class="lane">`,
      text({ x: left - 10, y: baseline, "text-anchor": "end", "font-weight": "bold", fill: "#212121" }, lane)
    )
    for (const span of chart.spans.filter((span) => span.lane === lane)) {
      const from = x(span.from)
      const w = Math.max(x(span.to) - from, 1)
      const colours = palette[span.tone]
      const times = `${formatElapsed(span.from)} to ${formatElapsed(span.to)} (${formatSeconds(span.to - span.from)})`
      out.push(
        `<g class="phase">`,
        title(`${lane}: ${span.name}, ${times}`),
        empty("rect", { x: from, y: barTop, width: w, height: barHeight, rx: 3, fill: colours.fill })
      )
      // A milestone's dashed line crosses every lane: the label starts after the lines near the phase's start.
      let start = from + 4
      for (const mark of [...marks].sort((a, b) => a.x - b.x)) {
        const end = Math.min(start + textWidth(span.name, font) + 3, from + w - 8)
        if (mark.x >= start - 3 && mark.x <= end) start = mark.x + 4
      }
      const label = fit(span.name, from + w - 4 - start, font)
      if (label !== "") out.push(text({ x: start, y: baseline, fill: colours.text }, label))
      out.push(`</g>`)
    }
    out.push(`</g>`)
  })

  // Milestones: a dashed line through every lane, a diamond on the axis, a label above the lanes.
  marks.forEach((mark, index) => {
    const labelY = headerTop + (levels[index] ?? 0) * labelRow + labelRow - 4
    const diamond = [[0, -6], [6, 0], [0, 6], [-6, 0]].map(([dx, dy]) =>
      `${num(mark.x + dx!)},${num(rowsBottom + dy!)}`
    )
    out.push(
      `<g class="milestone">`,
      title(`${mark.label} at ${formatElapsed(mark.at)}`),
      empty("line", {
        x1: mark.x,
        y1: labelY + 3,
        x2: mark.x,
        y2: rowsBottom,
        stroke: "#37474f",
        "stroke-dasharray": "4 3"
      }),
      empty("polygon", { points: diamond.join(" "), fill: "#37474f" }),
      text({
        x: mark.flip ? mark.x - 3 : mark.x + 3,
        y: labelY,
        "text-anchor": mark.flip ? "end" : "start",
        "font-size": font - 1,
        fill: "#263238"
      }, mark.label),
      `</g>`
    )
  })

  out.push(`</svg>`)
  return out.join("\n") + "\n"
}

// -------------------------------------------------------------------------------------------------
// The recorder
// -------------------------------------------------------------------------------------------------

/**
 * What is recorded: an event without its time, which is now unless `at` (epoch millis) says when.
 *
 * @since 0.1.0
 * @category models
 */
export interface Entry {
  readonly lane: string
  readonly text: string
  readonly phase?: Phase | undefined
  readonly milestone?: string | undefined
  /** Epoch millis, for an event seen late (read from a history); default: now. */
  readonly at?: number | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Recorder {
  /** Epoch millis of the timeline's zero. */
  readonly start: number
  /** Stamps and keeps the entry; the event is handed to `onEvent` before `record` returns. */
  readonly record: (entry: Entry) => Effect.Effect<Event>
  /** Every event so far, by time, then by order of recording. */
  readonly events: Effect.Effect<ReadonlyArray<Event>>
  /** Milliseconds since the start. */
  readonly elapsed: Effect.Effect<number>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface RecorderOptions {
  /** Epoch millis of the timeline's zero. Default: now. */
  readonly start?: number | undefined
  /** Sees every event as it is recorded, one at a time, in order of recording (to print it live). */
  readonly onEvent?: ((event: Event) => Effect.Effect<void>) | undefined
}

/**
 * A recorder whose zero is now (or `start`), on the `Clock`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: RecorderOptions = {}): Effect.Effect<Recorder> =>
  Effect.gen(function*() {
    const start = options.start ?? (yield* Clock.currentTimeMillis)
    const recorded = yield* Ref.make<ReadonlyArray<Event>>([])
    // One at a time, so the order `onEvent` sees is the order of `seq`.
    const lock = yield* Effect.makeSemaphore(1)
    const onEvent = options.onEvent ?? (() => Effect.void)
    const elapsed = Effect.map(Clock.currentTimeMillis, (now) => now - start)

    const record = (entry: Entry): Effect.Effect<Event> =>
      lock.withPermits(1)(
        Effect.gen(function*() {
          const at = entry.at === undefined ? yield* elapsed : entry.at - start
          const seq = (yield* Ref.get(recorded)).length
          const event: Event = {
            at,
            seq,
            lane: entry.lane,
            text: entry.text,
            ...(entry.phase === undefined ? {} : { phase: entry.phase }),
            ...(entry.milestone === undefined ? {} : { milestone: entry.milestone })
          }
          yield* Ref.update(recorded, (events) => [...events, event])
          yield* onEvent(event)
          return event
        })
      )

    return {
      start,
      record,
      events: Effect.map(Ref.get(recorded), order),
      elapsed
    } satisfies Recorder
  })
