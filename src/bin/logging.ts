/**
 * The logs of the master command and of the examples: the format from
 * LOG_FORMAT (logfmt, one line per entry, by default; json; or pretty) and the
 * least level from LOG_LEVEL (default Info). JSON lines are what the
 * end-to-end tests read back.
 */
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"

export const Logging = Layer.unwrapEffect(
  Effect.map(
    Config.all([
      Config.literal("pretty", "json", "logfmt")("LOG_FORMAT").pipe(Config.withDefault("logfmt" as const)),
      Config.logLevel("LOG_LEVEL").pipe(Config.withDefault(LogLevel.Info))
    ]),
    ([format, level]) =>
      Layer.merge(
        format === "json" ? Logger.json : format === "logfmt" ? Logger.logFmt : Logger.pretty,
        Logger.minimumLogLevel(level)
      )
  )
)
