/**
 * What users test their workers with.
 *
 * @since 0.1.0
 */
export * as FaultProxy from "./FaultProxy.js"
export * as Master from "./Master.js"
export * as MasterAdmin from "./MasterAdmin.js"
export * as Partition from "./Partition.js"
export * as SimulatedMaster from "./SimulatedMaster.js"
export * as SimulatedNetwork from "./SimulatedNetwork.js"
