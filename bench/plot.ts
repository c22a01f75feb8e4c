/**
 * Small SVG charts for the benchmark pages: grouped bars and line series.
 * Hand-written SVG, no dependency: the pictures are simple and must stay readable in a diff.
 */

import { escapeXml as escape } from "../examples/Timeline.js"

const palette = ["#1976d2", "#e53935", "#43a047", "#fb8c00", "#8e24aa", "#00897b"]

// A "nice" upper bound and tick step for an axis from 0 to max.
const axis = (max: number): { readonly top: number; readonly step: number } => {
  if (!(max > 0)) return { top: 1, step: 0.25 }
  const raw = max / 5
  const magnitude = 10 ** Math.floor(Math.log10(raw))
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw)!
  return { top: Math.ceil(max / step) * step, step }
}

const label = (value: number) => (Math.abs(value) >= 100 ? value.toFixed(0) : Number(value.toPrecision(3)).toString())

export interface Bar {
  readonly series: string
  readonly value: number
  /** Drawn as a whisker above the bar, e.g. the p95 or the max. */
  readonly high?: number | undefined
  /** A bar that could not be measured (did not finish): drawn hatched at the top, labelled. */
  readonly missing?: string | undefined
}

export interface BarGroup {
  readonly label: string
  readonly bars: ReadonlyArray<Bar>
}

/**
 * About how wide a line of text is in the charts' font (DejaVu Sans, as rsvg-convert and browsers draw it):
 * its average advance is about 0.6 em, 0.66 em in bold. Generous, so a line measured to fit does.
 */
export const textWidth = (text: string, size: number, bold = false): number => text.length * size * (bold ? 0.66 : 0.6)

/**
 * Grouped bars, one color per series, with a legend and a y axis in `unit`. The canvas is as wide as its
 * widest line of text needs; a bar's value is written above it, left of its whisker when it has one.
 */
export const bars = (options: {
  readonly title: string
  readonly subtitle?: string | undefined
  readonly unit: string
  readonly groups: ReadonlyArray<BarGroup>
}): string => {
  const series = Array.from(new Set(options.groups.flatMap((g) => g.bars.map((b) => b.series))))
  const values = options.groups.flatMap((g) => g.bars.flatMap((b) => [b.value, b.high ?? 0])).filter(Number.isFinite)
  const { top, step } = axis(Math.max(0, ...values))
  const whiskers = options.groups.some((g) => g.bars.some((b) => b.high !== undefined))
  // With whiskers, each bar is wider: its value on the left half, its whisker on the right.
  const barWidth = whiskers ? 44 : 36
  const slot = barWidth + 12
  const groupWidths = options.groups.map((g) => Math.max(g.bars.length * slot - 12, textWidth(g.label, 12) + 8))
  const barsWidth = groupWidths.reduce((a, b) => a + b, 0) + (options.groups.length - 1) * 40
  const width = Math.ceil(Math.max(
    barsWidth + 130,
    textWidth(options.title, 18, true) + 40,
    textWidth(options.subtitle ?? "", 13) + 40,
    Math.max(0, ...series.map((name) => textWidth(name, 12))) + 150
  ))
  const plot = { x: 70, y: 70, w: width - 100, h: 220 }
  const rows = legendRows(series, plot.x, width - 20)
  const height = plot.y + plot.h + 50 + rows * 18 + 10
  const y = (v: number) => plot.y + plot.h - (Math.min(v, top) / top) * plot.h
  const parts: Array<string> = []
  parts.push(`<text x="20" y="28" font-size="18" font-weight="bold">${escape(options.title)}</text>`)
  if (options.subtitle) parts.push(`<text x="20" y="50" font-size="13" fill="#555">${escape(options.subtitle)}</text>`)
  for (let v = 0; v <= top + 1e-9; v += step) {
    parts.push(`<line x1="${plot.x}" x2="${plot.x + plot.w}" y1="${y(v)}" y2="${y(v)}" stroke="#e0e0e0"/>`)
    parts.push(
      `<text x="${plot.x - 8}" y="${y(v) + 4}" font-size="11" text-anchor="end" fill="#555">${label(v)}</text>`
    )
  }
  parts.push(
    `<text x="18" y="${plot.y + plot.h / 2}" font-size="12" fill="#555" transform="rotate(-90 18 ${
      plot.y + plot.h / 2
    })" text-anchor="middle">${escape(options.unit)}</text>`
  )
  // The groups, centered in the plot.
  let x = plot.x + (plot.w - barsWidth) / 2
  options.groups.forEach((group, g) => {
    const groupWidth = groupWidths[g]!
    const start = x + (groupWidth - (group.bars.length * slot - 12)) / 2
    group.bars.forEach((bar, i) => {
      const left = start + i * slot
      const color = palette[series.indexOf(bar.series) % palette.length]
      if (bar.missing !== undefined) {
        parts.push(
          `<rect x="${left}" y="${plot.y}" width="${barWidth}" height="${plot.h}" fill="none" stroke="${color}" stroke-dasharray="4 3"/>`
        )
        parts.push(
          `<text x="${left + barWidth / 2}" y="${plot.y + 14}" font-size="10" text-anchor="middle" fill="${color}">${
            escape(bar.missing)
          }</text>`
        )
        return
      }
      parts.push(
        `<rect x="${left}" y="${y(bar.value)}" width="${barWidth}" height="${
          plot.y + plot.h - y(bar.value)
        }" fill="${color}"/>`
      )
      const hasWhisker = bar.high !== undefined && Number.isFinite(bar.high)
      const whiskerX = left + barWidth * 0.75
      parts.push(
        `<text x="${hasWhisker ? left + barWidth * 0.3 : left + barWidth / 2}" y="${
          y(bar.value) - 4
        }" font-size="10" text-anchor="middle">${label(bar.value)}</text>`
      )
      if (hasWhisker) {
        parts.push(`<line x1="${whiskerX}" x2="${whiskerX}" y1="${y(bar.value)}" y2="${y(bar.high!)}" stroke="#333"/>`)
        parts.push(
          `<line x1="${whiskerX - 6}" x2="${whiskerX + 6}" y1="${y(bar.high!)}" y2="${y(bar.high!)}" stroke="#333"/>`
        )
      }
    })
    parts.push(
      `<text x="${x + groupWidth / 2}" y="${plot.y + plot.h + 20}" font-size="12" text-anchor="middle">${
        escape(group.label)
      }</text>`
    )
    x += groupWidth + 40
  })
  parts.push(
    `<line x1="${plot.x}" x2="${plot.x + plot.w}" y1="${plot.y + plot.h}" y2="${plot.y + plot.h}" stroke="#333"/>`
  )
  legend(parts, series, plot.x, plot.y + plot.h + 50, width - 20)
  return svg(width, height, parts)
}

export interface Series {
  readonly name: string
  readonly points: ReadonlyArray<readonly [number, number]>
}

/** Line series over a shared x axis. */
export const lines = (options: {
  readonly title: string
  readonly subtitle?: string | undefined
  readonly xUnit: string
  readonly yUnit: string
  readonly series: ReadonlyArray<Series>
}): string => {
  const xs = options.series.flatMap((s) => s.points.map(([px]) => px))
  const ys = options.series.flatMap((s) => s.points.map(([, py]) => py))
  const xAxis = axis(Math.max(0, ...xs))
  const yAxis = axis(Math.max(0, ...ys))
  const width = Math.ceil(
    Math.max(760, textWidth(options.title, 18, true) + 40, textWidth(options.subtitle ?? "", 13) + 40)
  )
  const plot = { x: 70, y: 70, w: width - 100, h: 220 }
  const rows = legendRows(options.series.map((s) => s.name), plot.x, width - 20)
  const height = plot.y + plot.h + 70 + rows * 18 + 10
  const x = (v: number) => plot.x + (v / xAxis.top) * plot.w
  const y = (v: number) => plot.y + plot.h - (v / yAxis.top) * plot.h
  const parts: Array<string> = []
  parts.push(`<text x="20" y="28" font-size="18" font-weight="bold">${escape(options.title)}</text>`)
  if (options.subtitle) parts.push(`<text x="20" y="50" font-size="13" fill="#555">${escape(options.subtitle)}</text>`)
  for (let v = 0; v <= yAxis.top + 1e-9; v += yAxis.step) {
    parts.push(`<line x1="${plot.x}" x2="${plot.x + plot.w}" y1="${y(v)}" y2="${y(v)}" stroke="#e0e0e0"/>`)
    parts.push(
      `<text x="${plot.x - 8}" y="${y(v) + 4}" font-size="11" text-anchor="end" fill="#555">${label(v)}</text>`
    )
  }
  for (let v = 0; v <= xAxis.top + 1e-9; v += xAxis.step) {
    parts.push(
      `<text x="${x(v)}" y="${plot.y + plot.h + 16}" font-size="11" text-anchor="middle" fill="#555">${label(v)}</text>`
    )
  }
  parts.push(
    `<text x="${plot.x + plot.w / 2}" y="${plot.y + plot.h + 36}" font-size="12" text-anchor="middle" fill="#555">${
      escape(options.xUnit)
    }</text>`
  )
  parts.push(
    `<text x="18" y="${plot.y + plot.h / 2}" font-size="12" fill="#555" transform="rotate(-90 18 ${
      plot.y + plot.h / 2
    })" text-anchor="middle">${escape(options.yUnit)}</text>`
  )
  options.series.forEach((s, i) => {
    const color = palette[i % palette.length]
    const d = s.points.map(([px, py], j) => `${j === 0 ? "M" : "L"}${x(px).toFixed(1)},${y(py).toFixed(1)}`).join(" ")
    parts.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="1.5"/>`)
  })
  legend(parts, options.series.map((s) => s.name), plot.x, plot.y + plot.h + 70, width - 20)
  parts.push(
    `<line x1="${plot.x}" x2="${plot.x + plot.w}" y1="${plot.y + plot.h}" y2="${plot.y + plot.h}" stroke="#333"/>`
  )
  return svg(width, height, parts)
}

// Legend entries side by side, wrapping to a new row when the next would pass `right`.
const legendLayout = (names: ReadonlyArray<string>, left: number, right: number) => {
  let x = left
  let row = 0
  return names.map((name) => {
    const width = 18 + textWidth(name, 12)
    if (x + width > right && x > left) {
      x = left
      row++
    }
    const at = { x, row }
    x += width + 24
    return at
  })
}

const legendRows = (names: ReadonlyArray<string>, left: number, right: number) =>
  names.length === 0 ? 0 : Math.max(...legendLayout(names, left, right).map((at) => at.row)) + 1

const legend = (parts: Array<string>, names: ReadonlyArray<string>, left: number, top: number, right: number) => {
  legendLayout(names, left, right).forEach(({ row, x }, i) => {
    const y = top + row * 18
    parts.push(`<rect x="${x}" y="${y - 10}" width="12" height="12" fill="${palette[i % palette.length]}"/>`)
    parts.push(`<text x="${x + 18}" y="${y}" font-size="12">${escape(names[i]!)}</text>`)
  })
}

const svg = (width: number, height: number, parts: ReadonlyArray<string>) =>
  `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="DejaVu Sans, Arial, sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n${
    parts.join("\n")
  }\n</svg>\n`

/** Percentile (nearest rank) of a list of numbers. */
export const percentile = (values: ReadonlyArray<number>, p: number): number => {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!
}
