/**
 * The error for an option the library cannot work with, defined here so the
 * shared rules of `validate.ts` can make it; `InvalidOption` exports it.
 *
 * @internal
 */
import * as Data from "effect/Data"

/** An option the library cannot work with; names the option. */
export class InvalidOption extends Data.TaggedError("InvalidOption")<{
  readonly option: string
  readonly reason: string
}> {
  override get message() {
    return `invalid option ${this.option}: ${this.reason}`
  }
}
