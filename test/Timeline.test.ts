import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Ref from "effect/Ref"
import * as TestClock from "effect/TestClock"
import * as Timeline from "../examples/Timeline.js"

// A structural well-formedness check (Node has no DOMParser): one `svg` root, every tag closed in order,
// attributes double-quoted, no raw `&` or `<` in text or attribute values. Returns the first problem.
const problem = (xml: string): string | undefined => {
  const stack: Array<string> = []
  let roots = 0
  let last = 0
  const tagPattern = /<[^>]*>/g
  const entity = /&(?!(?:amp|lt|gt|quot|apos);)/
  for (const match of xml.matchAll(tagPattern)) {
    const text = xml.slice(last, match.index)
    if (text.includes("<") || entity.test(text)) return `raw markup in text: ${JSON.stringify(text)}`
    if (stack.length === 0 && text.trim() !== "") return `text outside the root: ${JSON.stringify(text)}`
    last = match.index + match[0].length
    const tag = /^<(\/)?([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/)?>$/.exec(match[0])
    if (tag === null) return `malformed tag: ${match[0]}`
    const [, closing, name, attributes = "", selfClosing] = tag
    if (entity.test(attributes)) return `raw & in attributes: ${match[0]}`
    if (closing !== undefined) {
      if (stack.pop() !== name) return `</${name}> closes nothing open`
    } else if (selfClosing === undefined) {
      if (stack.length === 0) roots++
      stack.push(name!)
    } else if (stack.length === 0) {
      roots++
    }
  }
  if (xml.slice(last).trim() !== "") return "text after the root"
  if (stack.length > 0) return `unclosed <${stack.join("><")}>`
  if (roots !== 1) return `${roots} roots`
  return /^<svg\s[^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/.test(xml.trimStart())
    ? undefined
    : "the root is not an svg"
}

const texts = (svg: string) => [...svg.matchAll(/<text[^>]*>([^<]*)<\/text>/g)].map((m) => m[1]!)

const attributes = (element: string) =>
  Object.fromEntries([...element.matchAll(/([\w-]+)="([^"]*)"/g)].map((m) => [m[1]!, m[2]!]))

// The bars of the phases, in drawing order.
const bars = (svg: string) =>
  [...svg.matchAll(/<g class="phase">\n<title>[^<]*<\/title>\n(<rect [^>]*\/>)/g)].map((m) => {
    const a = attributes(m[1]!)
    return { x: Number(a.x), width: Number(a.width), fill: a.fill }
  })

let seq = 0
const event = (at: number, lane: string, text: string, extra: Partial<Timeline.Event> = {}): Timeline.Event => ({
  at,
  seq: seq++,
  lane,
  text,
  ...extra
})

// The seed's CLS-001 in small: a reset, a task created during it, the restore, the task running.
const cls001 = [
  event(0, "Network", "network up", { phase: { name: "up", tone: "good" } }),
  event(100, "Connection", "connected (generation 1)", { phase: { name: "Ready (generation 1)", tone: "good" } }),
  event(2000, "Network", "fault begins: reset", {
    phase: { name: "fault: reset", tone: "fault" },
    milestone: "fault begins"
  }),
  event(2020, "Connection", "disconnected", { phase: { name: "Reconnecting", tone: "waiting" } }),
  event(4000, "Connection", "reconnecting, attempt 3", { phase: { name: "Reconnecting", tone: "waiting" } }),
  event(6500, "Task", "task created", { phase: { name: "pending", tone: "waiting" }, milestone: "task created" }),
  event(12_000, "Network", "network restored", { phase: { name: "up", tone: "good" }, milestone: "network restored" }),
  event(12_300, "Connection", "ready (generation 2)", {
    phase: { name: "Ready (generation 2)", tone: "good" },
    milestone: "ready (generation 2)"
  }),
  event(12_350, "Master", "node registered (generation 2)"),
  event(12_400, "Task", "task running", { phase: { name: "running", tone: "active" }, milestone: "task running" }),
  event(13_400, "Task", "task finished", { phase: { name: "finished", tone: "done" } })
]

describe("Timeline", () => {
  describe("formatting", () => {
    it("prints elapsed time as mm:ss.SSS", () => {
      assert.strictEqual(Timeline.formatElapsed(3012), "00:03.012")
      assert.strictEqual(Timeline.formatElapsed(0), "00:00.000")
      assert.strictEqual(Timeline.formatElapsed(61_005), "01:01.005")
      assert.strictEqual(Timeline.formatElapsed(59_999.6), "01:00.000")
      assert.strictEqual(Timeline.formatElapsed(-5), "00:00.000")
    })

    it("prints durations in ms under a second, else in seconds to one decimal", () => {
      assert.strictEqual(Timeline.formatSeconds(850), "850 ms")
      assert.strictEqual(Timeline.formatSeconds(1300), "1.3 s")
      assert.strictEqual(Timeline.formatSeconds(999.6), "1.0 s")
      assert.strictEqual(Timeline.formatSeconds(12_345), "12.3 s")
      assert.strictEqual(Timeline.formatSeconds(5012, 2), "5.01 s")
    })

    it("prints an event as one line: time, lane, text", () => {
      assert.strictEqual(
        Timeline.line({ at: 3012, seq: 0, lane: "Connection", text: "connected (generation 1)" }),
        "00:03.012  Connection  connected (generation 1)"
      )
      assert.strictEqual(
        Timeline.line({ at: 12_345, seq: 1, lane: "Task", text: "task running" }),
        "00:12.345  Task        task running"
      )
    })
  })

  describe("from events to a chart", () => {
    it("orders events by time, then by order of recording, whatever order they come in", () => {
      const a = { at: 5000, seq: 0, lane: "A", text: "a" }
      const b = { at: 5000, seq: 1, lane: "A", text: "b" }
      const c = { at: 1000, seq: 2, lane: "A", text: "c" }
      assert.deepStrictEqual(Timeline.order([b, a, c]).map((e) => e.text), ["c", "a", "b"])
    })

    it("turns phase events into spans: a repeated phase continues, the last lasts to the end", () => {
      const spans = Timeline.spans(cls001, 14_000).filter((s) => s.lane === "Connection")
      assert.deepStrictEqual(spans, [
        { lane: "Connection", name: "Ready (generation 1)", tone: "good", from: 100, to: 2020 },
        { lane: "Connection", name: "Reconnecting", tone: "waiting", from: 2020, to: 12_300 },
        { lane: "Connection", name: "Ready (generation 2)", tone: "good", from: 12_300, to: 14_000 }
      ])
    })

    it("orders events recorded late by their time before making spans, and drops phases of no length", () => {
      const spans = Timeline.spans([
        event(5000, "Task", "running", { phase: { name: "running", tone: "active" } }),
        event(1000, "Task", "pending", { phase: { name: "pending", tone: "waiting" } }),
        event(5000, "Task", "assigned", { phase: { name: "fetched", tone: "active" } }),
        event(-200, "Network", "up", { phase: { name: "up", tone: "good" } })
      ], 6000)
      assert.deepStrictEqual(spans.map((s) => [s.lane, s.name, s.from, s.to]), [
        ["Network", "up", 0, 6000],
        ["Task", "pending", 1000, 5000],
        ["Task", "fetched", 5000, 6000]
      ])
    })

    it("keeps the lanes with phases in order of their first event, and the milestones in time order", () => {
      const chart = Timeline.chart(cls001, { title: "CLS-001" })
      assert.deepStrictEqual(chart.lanes, ["Network", "Connection", "Task"])
      assert.deepStrictEqual(chart.milestones.map((m) => m.label), [
        "fault begins",
        "task created",
        "network restored",
        "ready (generation 2)",
        "task running"
      ])
      assert.strictEqual(chart.end, 13_400)
      assert.strictEqual(Timeline.chart(cls001, { title: "t", end: 20_000 }).end, 20_000)
      const onlyTask = Timeline.chart(cls001, { title: "t", lanes: ["Task"] })
      assert.deepStrictEqual([...new Set(onlyTask.spans.map((s) => s.lane))], ["Task"])
    })
  })

  describe("SVG", () => {
    it("the well-formedness check rejects broken documents", () => {
      assert.isDefined(problem(`<svg xmlns="http://www.w3.org/2000/svg"><g></svg>`))
      assert.isDefined(problem(`<svg xmlns="http://www.w3.org/2000/svg"><text>a & b</text></svg>`))
      assert.isDefined(problem(`<svg xmlns="http://www.w3.org/2000/svg"><rect x=1/></svg>`))
      assert.isDefined(
        problem(`<svg xmlns="http://www.w3.org/2000/svg"></svg><svg xmlns="http://www.w3.org/2000/svg"></svg>`)
      )
      assert.isDefined(problem(`<html></html>`))
      assert.isUndefined(
        problem(`<svg xmlns="http://www.w3.org/2000/svg"><g><rect x="1"/><text>a &amp; b</text></g></svg>`)
      )
    })

    it("renders a well-formed SVG with the title, every lane, phase and milestone label", () => {
      const svg = Timeline.renderSvg(
        Timeline.chart(cls001, { title: "CLS-001: reset", subtitle: "PASS: started 100 ms after", end: 14_000 })
      )
      assert.isUndefined(problem(svg))
      const labels = texts(svg)
      for (
        const label of [
          "CLS-001: reset",
          "PASS: started 100 ms after",
          "Network",
          "Connection",
          "Task",
          "fault: reset",
          "Reconnecting",
          "pending",
          "fault begins",
          "task created",
          "network restored",
          "ready (generation 2)",
          "task running"
        ]
      ) {
        assert.include(labels, label)
      }
      // A lane without a phase gets no row.
      assert.notInclude(labels, "Master")
      assert.strictEqual(bars(svg).length, Timeline.spans(cls001, 14_000).length)
    })

    it("draws each phase from its start to its end, to scale, in its tone's colour", () => {
      const svg = Timeline.renderSvg({
        title: "scale",
        lanes: ["A"],
        spans: [
          { lane: "A", name: "first", tone: "good", from: 0, to: 5000 },
          { lane: "A", name: "second", tone: "fault", from: 5000, to: 7500 }
        ],
        milestones: [],
        end: 10_000
      })
      const [first, second] = bars(svg)
      assert.isDefined(first)
      assert.isDefined(second)
      assert.closeTo(first!.width, 2 * second!.width, 0.2)
      assert.closeTo(second!.x, first!.x + first!.width, 0.2)
      assert.notStrictEqual(first!.fill, second!.fill)
    })

    it("escapes markup in labels", () => {
      const svg = Timeline.renderSvg({
        title: `a <b> & "c"`,
        lanes: ["<lane>"],
        spans: [{ lane: "<lane>", name: "x & y", tone: "neutral", from: 0, to: 1000 }],
        milestones: [{ at: 500, label: "<now>" }],
        end: 1000
      })
      assert.isUndefined(problem(svg))
      assert.include(svg, "a &lt;b&gt; &amp; &quot;c&quot;")
      assert.include(svg, "&lt;lane&gt;")
      assert.include(svg, "x &amp; y")
      assert.notInclude(svg, "<now>")
    })

    it("labels the x axis in seconds with round ticks", () => {
      assert.strictEqual(Timeline.tickStep(13_700), 2000)
      assert.strictEqual(Timeline.tickStep(1000), 100)
      assert.strictEqual(Timeline.tickStep(60_000), 5000)
      const labels = texts(Timeline.renderSvg(Timeline.chart(cls001, { title: "t", end: 13_700 })))
      for (const tick of ["0 s", "2 s", "6 s", "12 s"]) assert.include(labels, tick)
      assert.notInclude(labels, "14 s")
      assert.include(labels, "seconds since the start")
    })

    it("puts milestone labels that would overlap on different levels", () => {
      assert.deepStrictEqual(
        Timeline.stagger([{ left: 0, width: 50 }, { left: 20, width: 50 }, { left: 200, width: 10 }, {
          left: 60,
          width: 10
        }]),
        [0, 1, 0, 0]
      )
      const svg = Timeline.renderSvg({
        title: "t",
        lanes: ["A"],
        spans: [],
        milestones: [{ at: 5000, label: "network restored" }, { at: 5100, label: "ready (generation 2)" }],
        end: 10_000
      })
      const ys = [...svg.matchAll(/<text [^>]*y="([\d.]+)"[^>]*>(network restored|ready \(generation 2\))</g)].map((
        m
      ) => m[1])
      assert.strictEqual(ys.length, 2)
      assert.notStrictEqual(ys[0], ys[1])
    })

    it("shortens a phase label too wide for its bar, and leaves a tiny bar's to the tooltip", () => {
      assert.strictEqual(Timeline.fit("Reconnecting", 500, 12), "Reconnecting")
      const short = Timeline.fit("Ready (generation 1)", 60, 12)
      assert.isTrue(short.endsWith("\u2026") && short.length < "Ready (generation 1)".length, short)
      assert.strictEqual(Timeline.fit("fetched", 10, 12), "")
      const svg = Timeline.renderSvg({
        title: "t",
        lanes: ["Task"],
        spans: [{ lane: "Task", name: "fetched", tone: "active", from: 0, to: 10 }],
        milestones: [],
        end: 10_000
      })
      assert.notInclude(texts(svg), "fetched")
      assert.include(svg, "<title>Task: fetched, 00:00.000 to 00:00.010 (10 ms)</title>")
    })
  })

  describe("recorder", () => {
    it.effect("stamps events with the Clock and returns them by time, then by order of recording", () =>
      Effect.gen(function*() {
        const seen = yield* Ref.make<ReadonlyArray<string>>([])
        const recorder = yield* Timeline.make({
          onEvent: (event) => Ref.update(seen, (texts) => [...texts, event.text])
        })
        assert.strictEqual(recorder.start, 0)
        yield* TestClock.adjust("1 second")
        yield* recorder.record({ lane: "Connection", text: "connected" })
        yield* TestClock.adjust("2 seconds")
        yield* recorder.record({ lane: "Network", text: "fault", phase: { name: "fault", tone: "fault" } })
        // Seen late, from a history: it happened before the fault.
        yield* recorder.record({ lane: "Task", text: "created", at: 2500 })
        yield* recorder.record({ lane: "Task", text: "also at 3 s", at: 3000 })
        const events = yield* recorder.events
        assert.deepStrictEqual(events.map((e) => [e.at, e.text]), [
          [1000, "connected"],
          [2500, "created"],
          [3000, "fault"],
          [3000, "also at 3 s"]
        ])
        assert.deepStrictEqual(events.find((e) => e.text === "fault")?.phase, { name: "fault", tone: "fault" })
        assert.isFalse("phase" in events[0]!)
        // `onEvent` sees them as they were recorded.
        assert.deepStrictEqual(yield* Ref.get(seen), ["connected", "fault", "created", "also at 3 s"])
        assert.strictEqual(yield* recorder.elapsed, 3000)
        assert.deepStrictEqual(events.map((e) => e.seq), [0, 2, 1, 3])
      }))

    it.effect("measures from the start it is given", () =>
      Effect.gen(function*() {
        yield* TestClock.adjust("10 seconds")
        const recorder = yield* Timeline.make({ start: 4000 })
        const now = yield* recorder.record({ lane: "A", text: "now" })
        const earlier = yield* recorder.record({ lane: "A", text: "earlier", at: 5000 })
        assert.strictEqual(now.at, 6000)
        assert.strictEqual(earlier.at, 1000)
        assert.deepStrictEqual((yield* recorder.events).map((e) => e.text), ["earlier", "now"])
      }))
  })
})
