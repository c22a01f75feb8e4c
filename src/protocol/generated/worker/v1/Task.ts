// Original file: proto/worker.proto

import type { Long } from '@grpc/proto-loader';

export interface Task {
  /**
   * Never reused by the master, across its restarts too (see the top of this file).
   */
  'id'?: (string);
  /**
   * JSON the worker decodes.
   */
  'payload'?: (string);
  /**
   * Higher runs first.
   */
  'priority'?: (number);
  /**
   * Epoch milliseconds; a decimal string in the generated types (--longs=String).
   */
  'created_at_ms'?: (number | string | Long);
}

export interface Task__Output {
  /**
   * Never reused by the master, across its restarts too (see the top of this file).
   */
  'id': (string);
  /**
   * JSON the worker decodes.
   */
  'payload': (string);
  /**
   * Higher runs first.
   */
  'priority': (number);
  /**
   * Epoch milliseconds; a decimal string in the generated types (--longs=String).
   */
  'created_at_ms': (string);
}
