import { assert, describe, it } from "@effect/vitest"
import * as grpc from "@grpc/grpc-js"
import * as protoLoader from "@grpc/proto-loader"
import { execFile } from "node:child_process"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import { beforeAll } from "vitest"
import * as WorkerProtocol from "../src/WorkerProtocol.js"

interface Snapshot {
  /** Every path read through `node:fs` during the import. */
  readonly reads: ReadonlyArray<string>
  /** The packages whose modules were loaded. */
  readonly packages: ReadonlyArray<string>
  /** The fibers the Effect runtime had made. */
  readonly fibers: number
}

const root = fileURLToPath(new URL("..", import.meta.url))

// A fresh process per entry: this one has long since loaded everything.
const probe = async (entry: string, use = false): Promise<{ imported: Snapshot; used?: Snapshot }> => {
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ["--import", "tsx", "test/fixtures/imports.ts", ...(use ? ["--use"] : []), entry],
    { cwd: root, env: { ...process.env, NODE_OPTIONS: "" }, timeout: 90_000, maxBuffer: 16 * 1024 * 1024 }
  )
  return JSON.parse(stdout)
}

const entries = {
  root: "src/index.ts",
  node: "src/node/index.ts",
  sqlite: "src/sqlite/index.ts",
  testing: "src/testing/index.ts"
} as const
type Entry = keyof typeof entries
const found: Partial<Record<Entry, Snapshot>> = {}
let used: Snapshot | undefined

beforeAll(async () => {
  const [rootProbe, nodeProbe, sqliteProbe, testingProbe] = await Promise.all([
    probe(entries.root, true),
    probe(entries.node),
    probe(entries.sqlite),
    probe(entries.testing)
  ])
  found.root = rootProbe.imported
  found.node = nodeProbe.imported
  found.sqlite = sqliteProbe.imported
  found.testing = testingProbe.imported
  used = rootProbe.used
}, 120_000)

const snapshot = (entry: Entry): Snapshot => {
  const result = found[entry]
  if (result === undefined) throw new Error(`no probe of the ${entry} entry`)
  return result
}

// Module loading reads sources and their maps; anything else is the library at work.
const dataReads = (snapshot: Snapshot) => snapshot.reads.filter((path) => !/\.([cm]?[jt]s|json)(\.map)?$/.test(path))

const protocolPackages = ["protobufjs", "@grpc/proto-loader", "grpc-health-check"]

describe("importing an entry does no work", () => {
  it.each(Object.keys(entries) as Array<Entry>)("the %s entry reads no .proto or other data file", (entry) => {
    assert.deepStrictEqual(dataReads(snapshot(entry)), [])
  })

  it.each(Object.keys(entries) as Array<Entry>)(
    "the %s entry loads neither protobufjs nor proto-loader nor grpc-health-check",
    (entry) => {
      assert.deepStrictEqual(snapshot(entry).packages.filter((name) => protocolPackages.includes(name)), [])
    }
  )

  it("the testing entry loads no @effect/platform-node", () => {
    assert.notInclude(snapshot("testing").packages, "@effect/platform-node")
  })

  it("the root entry loads no @effect/platform-node", () => {
    assert.notInclude(snapshot("root").packages, "@effect/platform-node")
  })

  it.each(Object.keys(entries) as Array<Entry>)("the %s entry runs no fiber", (entry) => {
    assert.strictEqual(snapshot(entry).fibers, 0)
  })

  it("the probe sees a load: constructing a Worker client reads worker.proto and loads protobufjs", () => {
    assert.isDefined(used)
    assert.include(used!.reads, WorkerProtocol.protoPath)
    assert.include(used!.packages, "protobufjs")
    assert.include(used!.packages, "@grpc/proto-loader")
  })
})

describe("the protocol, loaded on first use", () => {
  const proto = protoLoader.loadSync(WorkerProtocol.protoPath, WorkerProtocol.loaderOptions)
  const fromProto = (name: string) => proto[name] as protoLoader.ServiceDefinition

  it("each lazy definition lists the proto's methods, with their paths and stream kinds", () => {
    for (
      const [definition, name] of [[WorkerProtocol.NodeService, WorkerProtocol.serviceNames.node], [
        WorkerProtocol.TaskService,
        WorkerProtocol.serviceNames.task
      ]] as const
    ) {
      const expected = fromProto(name)
      assert.deepStrictEqual(Object.keys(definition), Object.keys(expected))
      for (const method of Object.keys(expected)) {
        const { path, requestStream, responseStream, originalName } = definition[method]!
        assert.deepStrictEqual(
          { path, requestStream, responseStream, originalName },
          {
            path: expected[method]!.path,
            requestStream: expected[method]!.requestStream,
            responseStream: expected[method]!.responseStream,
            originalName: expected[method]!.originalName
          }
        )
      }
    }
  })

  it("a lazy constructor makes grpc-js clients: instanceof, extends and service hold", () => {
    class Subclassed extends WorkerProtocol.TaskServiceClient {}
    const node = new WorkerProtocol.NodeServiceClient("127.0.0.1:1", grpc.credentials.createInsecure())
    const task = new Subclassed("127.0.0.1:1", grpc.credentials.createInsecure())
    try {
      assert.instanceOf(node, WorkerProtocol.NodeServiceClient)
      assert.instanceOf(node, grpc.Client)
      assert.instanceOf(task, Subclassed)
      assert.instanceOf(task, WorkerProtocol.TaskServiceClient)
      assert.isFunction(node.Register)
      assert.isFunction(task.FetchTask)
      assert.strictEqual(WorkerProtocol.NodeServiceClient.service, WorkerProtocol.NodeService)
      assert.strictEqual(WorkerProtocol.TaskServiceClient.service, WorkerProtocol.TaskService)
    } finally {
      node.close()
      task.close()
    }
  })
})
