// Original file: proto/worker.proto

import type { TaskStatus as _worker_v1_TaskStatus, TaskStatus__Output as _worker_v1_TaskStatus__Output } from '../../worker/v1/TaskStatus.js';

export interface ReportStatusRequest {
  'task_id'?: (string);
  'node_key'?: (string);
  'status'?: (_worker_v1_TaskStatus);
  /**
   * Why the task failed, with status ERROR.
   */
  'error'?: (string);
  /**
   * The same key for every retry of one report.
   */
  'idempotency_key'?: (string);
}

export interface ReportStatusRequest__Output {
  'task_id': (string);
  'node_key': (string);
  'status': (_worker_v1_TaskStatus__Output);
  /**
   * Why the task failed, with status ERROR.
   */
  'error': (string);
  /**
   * The same key for every retry of one report.
   */
  'idempotency_key': (string);
}
