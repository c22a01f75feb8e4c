// Original file: proto/worker.proto


/**
 * The master is there: at least every `interval_ms` it names (see `Subscribe`).
 */
export interface Keepalive {
  'interval_ms'?: (number);
}

/**
 * The master is there: at least every `interval_ms` it names (see `Subscribe`).
 */
export interface Keepalive__Output {
  'interval_ms': (number);
}
