/**
 * The one error for an option the library cannot work with, from code or
 * from the environment's `Config`: it names the option and says why.
 *
 * @since 0.2.0
 */
import * as Data from "effect/Data"
import * as Predicate from "effect/Predicate"

/**
 * An option the library cannot work with; names the option.
 *
 * @since 0.2.0
 * @category errors
 */
export class InvalidOption extends Data.TaggedError("InvalidOption")<{
  readonly option: string
  readonly reason: string
}> {
  override get message() {
    return `invalid option ${this.option}: ${this.reason}`
  }
}

/**
 * @since 0.2.0
 * @category refinements
 */
export const isInvalidOption = (u: unknown): u is InvalidOption => Predicate.isTagged(u, "InvalidOption")
