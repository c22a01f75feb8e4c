/**
 * The SQLite outbox store: `import { SqliteOutbox } from "effect-grpc-resilience/sqlite"`.
 * Needs the optional peers `@effect/sql-sqlite-node` and `@effect/sql`.
 *
 * @since 0.2.0
 */
export * as SqliteOutbox from "./SqliteOutbox.js"
