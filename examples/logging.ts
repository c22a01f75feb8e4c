/**
 * The examples log as the master command does (LOG_FORMAT, LOG_LEVEL).
 */
export { Logging } from "../src/bin/logging.js"
