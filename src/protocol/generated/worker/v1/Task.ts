// Original file: proto/worker.proto

import type { Long } from '@grpc/proto-loader';

export interface Task {
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
