// The module graph's rules, checked by `npm run check:deps` (dependency-cruiser) in CI.

// Each owner's engine, under src/internal/<folder>/, and the one public module that owns it.
const owners = {
  connection: "Connection",
  taskHandler: "TaskHandler",
  outbox: "Outbox",
  health: "Health"
}

/** @type {import("dependency-cruiser").IConfiguration} */
module.exports = {
  forbidden: [
    ...Object.entries(owners).map(([folder, owner]) => ({
      name: `internal-${folder}-is-${owner}s`,
      comment: `src/internal/${folder}/ is the engine of ${owner}: only src/${owner}.ts and its own files import it.`,
      severity: "error",
      from: { path: "^src/", pathNot: `^src/(${owner}\\.ts|internal/${folder}/)` },
      to: { path: `^src/internal/${folder}/` }
    })),
    {
      name: "internal-is-by-owner",
      comment: "src/internal/ holds the owners' folders above and the shared set: no loose file, no other folder.",
      severity: "error",
      from: { path: "^src/" },
      to: { path: "^src/internal/", pathNot: `^src/internal/(${[...Object.keys(owners), "shared"].join("|")})/` }
    },
    {
      name: "shared-imports-no-public-module",
      comment: "The shared internal set (src/internal/shared/) stands below every public module: it imports none.",
      severity: "error",
      from: { path: "^src/internal/shared/" },
      to: { path: "^src/", pathNot: "^src/internal/shared/" }
    },
    {
      name: "testing-internal-is-testing",
      comment: "src/testing/internal/ is the testing entry's own.",
      severity: "error",
      from: { path: "^src/", pathNot: "^src/testing/" },
      to: { path: "^src/testing/internal/" }
    },
    {
      name: "core-imports-no-node-module",
      comment:
        "The core imports no node: module but in src/internal/shared/runtime.ts, what a port to another runtime replaces; the node entry, the sqlite entry, the testing entry and the master command may.",
      severity: "error",
      from: { path: "^src/", pathNot: "^src/(node|sqlite|testing|bin)/|^src/internal/shared/runtime\\.ts$" },
      to: { dependencyTypes: ["core"] }
    },
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
