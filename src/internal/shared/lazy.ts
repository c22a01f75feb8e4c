/**
 * A value made on first use, then kept. Importing the library does no work:
 * protobufjs, the `.proto` files and the health service load when a client or
 * server first needs them.
 */
export const lazy = <A>(make: () => A): () => A => {
  let made: { readonly value: A } | undefined
  return () => (made ??= { value: make() }).value
}
