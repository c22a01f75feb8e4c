/**
 * The file-system outbox store on Node: `Outbox.layerFileSystem` and
 * `Outbox.layerConfig` with Node's `FileSystem` and `Path` provided.
 *
 * @since 0.2.0
 */
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import type * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Layer from "effect/Layer"
import * as Outbox from "../Outbox.js"

const NodeLive = Layer.merge(NodeFileSystem.layer, NodePath.layer)

/**
 * The outbox store in `directory`, on Node's file system (see `Outbox.layerFileSystem`).
 *
 * @since 0.2.0
 * @category layers
 */
export const layerFileSystem = (directory: string): Layer.Layer<Outbox.OutboxStore, Outbox.OutboxError> =>
  Outbox.layerFileSystem(directory).pipe(Layer.provide(NodeLive))

/**
 * The outbox store in the directory `OUTBOX_DIR` (default `.outbox`), on Node's file system.
 *
 * @since 0.2.0
 * @category layers
 */
export const layerConfig = (
  options: Config.Config.Wrap<{ readonly directory: string }> = Outbox.config
): Layer.Layer<Outbox.OutboxStore, Outbox.OutboxError | ConfigError.ConfigError> =>
  Outbox.layerConfig(options).pipe(Layer.provide(NodeLive))
