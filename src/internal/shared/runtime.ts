/**
 * What the core takes from Node itself, in one place: its `node:` modules
 * (no other module of the core imports one; a dependency rule keeps it so)
 * and its process. What grpc-js's own API asks for (a `Buffer` of
 * certificates or of status details) stays where grpc-js asks for it.
 *
 * @internal
 */
import { accessSync, constants, statSync } from "node:fs"
import { createRequire } from "node:module"
import { isIPv4, isIPv6 } from "node:net"
import { checkServerIdentity as nodeCheckServerIdentity } from "node:tls"
import { fileURLToPath } from "node:url"

/** Synchronous loading of the CommonJS packages used on first use (a client constructor cannot await). */
export const requireLazily: NodeJS.Require = createRequire(import.meta.url)

/** The file system path of a `file:` URL. */
export const pathOfFileUrl = (url: URL): string => fileURLToPath(url)

/** Node's check of a certificate's names against a host, which grpc-js's `checkServerIdentity` option expects. */
export const checkServerIdentity = nodeCheckServerIdentity

/** Is the address an IPv4 address? */
export const isIpV4 = (address: string): boolean => isIPv4(address)

/** Is the address an IPv6 address? */
export const isIpV6 = (address: string): boolean => isIPv6(address)

/** Is this the path of a regular file this process can read? Checked synchronously, when a config is read. */
export const isReadableFilePath = (path: string): boolean => {
  try {
    accessSync(path, constants.R_OK)
    return statSync(path).isFile()
  } catch {
    return false
  }
}

/** This process's pid. */
export const processId = (): number => process.pid

/** Does a process with this pid run (signal 0 reaches it, or it runs as another user)? */
export const isSignalable = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    // EPERM: it runs, as another user.
    return (error as { code?: unknown }).code === "EPERM"
  }
}
