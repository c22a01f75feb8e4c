/**
 * The one error for an option the library cannot work with, from code or
 * from the environment's `Config`: it names the option and says why.
 *
 * @since 0.2.0
 */
import * as Predicate from "effect/Predicate"
import { InvalidOption } from "./internal/shared/invalidOption.js"

export {
  /**
   * An option the library cannot work with; names the option.
   *
   * @since 0.2.0
   * @category errors
   */
  InvalidOption
}

/**
 * @since 0.2.0
 * @category refinements
 */
export const isInvalidOption = (u: unknown): u is InvalidOption => Predicate.isTagged(u, "InvalidOption")
