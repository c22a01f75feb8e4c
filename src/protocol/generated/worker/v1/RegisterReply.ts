// Original file: proto/worker.proto


export interface RegisterReply {
  /**
   * The master's incarnation: new on every start of the master (a restart with empty memory, a failover). Empty:
   * the master does not say.
   */
  'incarnation'?: (string);
}

export interface RegisterReply__Output {
  /**
   * The master's incarnation: new on every start of the master (a restart with empty memory, a failover). Empty:
   * the master does not say.
   */
  'incarnation': (string);
}
