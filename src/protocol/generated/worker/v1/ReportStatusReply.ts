// Original file: proto/worker.proto

import type { ReportOutcome as _worker_v1_ReportOutcome, ReportOutcome__Output as _worker_v1_ReportOutcome__Output } from '../../worker/v1/ReportOutcome.js';

export interface ReportStatusReply {
  'outcome'?: (_worker_v1_ReportOutcome);
}

export interface ReportStatusReply__Output {
  'outcome': (_worker_v1_ReportOutcome__Output);
}
