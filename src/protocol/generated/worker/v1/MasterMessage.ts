// Original file: proto/worker.proto

import type { CancelTask as _worker_v1_CancelTask, CancelTask__Output as _worker_v1_CancelTask__Output } from '../../worker/v1/CancelTask.js';
import type { Keepalive as _worker_v1_Keepalive, Keepalive__Output as _worker_v1_Keepalive__Output } from '../../worker/v1/Keepalive.js';

export interface MasterMessage {
  'cancel_task'?: (_worker_v1_CancelTask | null);
  'keepalive'?: (_worker_v1_Keepalive | null);
  'message'?: "cancel_task"|"keepalive";
}

export interface MasterMessage__Output {
  'cancel_task'?: (_worker_v1_CancelTask__Output | null);
  'keepalive'?: (_worker_v1_Keepalive__Output | null);
  'message'?: "cancel_task"|"keepalive";
}
