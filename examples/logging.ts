/**
 * The examples' log format, from LOG_FORMAT: pretty (default), json or logfmt.
 * JSON lines are what the end-to-end tests read back.
 */
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"

export const Logging = Layer.unwrapEffect(
  Effect.map(
    Config.literal("pretty", "json", "logfmt")("LOG_FORMAT").pipe(Config.withDefault("pretty" as const)),
    (format) => (format === "json" ? Logger.json : format === "logfmt" ? Logger.logFmt : Logger.pretty)
  )
)
