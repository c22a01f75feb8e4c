import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // The end-to-end files mostly wait on real time: run them beside the rest, not after it.
    maxWorkers: 4,
    minWorkers: 1,
    // The JSON report is what .ci/run counts.
    reporters: ["default", "json"],
    outputFile: { json: "test-results.json" }
  }
})
