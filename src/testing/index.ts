/**
 * What users test their workers with.
 *
 * @since 0.1.0
 */
export * as SimulatedNetwork from "./SimulatedNetwork.js"
