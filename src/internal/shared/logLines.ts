/**
 * One line per log entry where nobody reads colours. `NodeRuntime.runMain`
 * installs Effect's pretty logger, which puts an entry's annotations on lines
 * of their own: fine on a terminal, and six lines a log collector cannot
 * put back together in a pod's log. Where the standard output is not a
 * terminal, Effect's default logger (logfmt, one line) takes its place. A
 * logger of the user's own, the pretty one made anew included
 * (`Logger.prettyLogger()`), is left alone.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import * as HashSet from "effect/HashSet"
import * as Logger from "effect/Logger"

const terminal = (): boolean =>
  (globalThis as { readonly process?: { readonly stdout?: { readonly isTTY?: boolean } } }).process?.stdout?.isTTY ===
    true

/** For the rest of the scope (and of a layer's dependents): one line per entry unless the output is a terminal. */
export const oneLineUnlessTerminal = Effect.locallyScopedWith(
  FiberRef.currentLoggers,
  (loggers) =>
    terminal() || !HashSet.has(loggers, Logger.prettyLoggerDefault)
      ? loggers
      : loggers.pipe(HashSet.remove(Logger.prettyLoggerDefault), HashSet.add(Logger.defaultLogger))
)
