/**
 * Every error the package's main entry exports comes with its guard (`isX` beside `X`), which takes its own
 * instances and no other error's.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Library from "../src/index.js"

type Guard = (u: unknown) => boolean
interface ErrorClass {
  readonly name: string
  readonly module: string
  readonly make: () => unknown
  readonly guard: Guard | undefined
}

// Every class of every module whose instances are tagged errors, built with fields a test can give.
const errorClasses: ReadonlyArray<ErrorClass> = Object.entries(Library).flatMap(([module, exports]) =>
  Object.entries(exports as Record<string, unknown>).flatMap(([name, value]) => {
    if (typeof value !== "function" || !(value.prototype instanceof Error)) return []
    const make = () => new (value as new(fields: object) => unknown)({ message: `a ${name}`, reason: "Timeout" })
    const tag = (make() as { readonly _tag?: unknown })._tag
    if (tag !== name) return []
    const guard = (exports as Record<string, unknown>)[`is${name}`]
    return [{ name, module, make, guard: typeof guard === "function" ? (guard as Guard) : undefined }]
  })
)

describe("errors", () => {
  it("the entry exports its errors (a dozen at least)", () => {
    assert.includeMembers(errorClasses.map((e) => e.name), [
      "GrpcError",
      "ConnectError",
      "ClientUnavailable",
      "BreakerOpen",
      "OutboxError",
      "ReadinessTimeout",
      "InvalidOption"
    ])
    assert.isAtLeast(errorClasses.length, 12, errorClasses.map((e) => e.name).join(", "))
  })

  it("every error has its guard beside it", () => {
    assert.deepStrictEqual(
      errorClasses.filter((e) => e.guard === undefined).map((e) => `${e.module}.${e.name}`),
      []
    )
  })

  it("each guard takes its own error and refuses every other one, and a plain Error", () => {
    for (const error of errorClasses) {
      assert.isTrue(error.guard!(error.make()), `${error.module}.is${error.name} of its own`)
      for (const other of errorClasses.filter((e) => e.name !== error.name)) {
        assert.isFalse(error.guard!(other.make()), `${error.module}.is${error.name} of a ${other.name}`)
      }
      assert.isFalse(error.guard!(new Error(error.name)))
    }
  })
})
