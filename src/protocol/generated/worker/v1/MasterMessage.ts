// Original file: proto/worker.proto

import type { CancelTask as _worker_v1_CancelTask, CancelTask__Output as _worker_v1_CancelTask__Output } from '../../worker/v1/CancelTask.js';

export interface MasterMessage {
  'cancel_task'?: (_worker_v1_CancelTask | null);
  'message'?: "cancel_task";
}

export interface MasterMessage__Output {
  'cancel_task'?: (_worker_v1_CancelTask__Output | null);
  'message'?: "cancel_task";
}
