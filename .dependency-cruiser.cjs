// The module graph's rules, checked by `npm run check:deps` (dependency-cruiser) in CI.
/** @type {import("dependency-cruiser").IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: "no-circular",
      comment: "A module of src/ never imports itself back, through types neither.",
      severity: "error",
      from: { path: "^src/" },
      to: { circular: true }
    },
    {
      name: "core-is-platform-neutral",
      comment: "Only the node entry and the master command use @effect/platform-node.",
      severity: "error",
      from: { path: "^src/", pathNot: "^src/(node|bin)/" },
      to: { path: "@effect/platform-node" }
    },
    {
      name: "core-needs-no-sqlite",
      comment: "Only the sqlite entry uses @effect/sql and its SQLite driver.",
      severity: "error",
      from: { path: "^src/", pathNot: "^src/sqlite/" },
      to: { path: "@effect/sql" }
    },
    {
      name: "library-is-not-its-tests",
      comment: "The library imports nothing of its tests, benchmarks or examples.",
      severity: "error",
      from: { path: "^src/" },
      to: { path: "^(test|bench|examples)/" }
    },
    {
      name: "core-is-not-testing",
      comment: "What users test with is built on the library, never the other way round.",
      severity: "error",
      from: { path: "^src/", pathNot: "^src/(testing|bin)/" },
      to: { path: "^src/testing/" }
    }
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" }
  }
}
