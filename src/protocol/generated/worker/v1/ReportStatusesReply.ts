// Original file: proto/worker.proto

import type { ReportResult as _worker_v1_ReportResult, ReportResult__Output as _worker_v1_ReportResult__Output } from '../../worker/v1/ReportResult.js';

export interface ReportStatusesReply {
  /**
   * One per report, in the order of the request.
   */
  'results'?: (_worker_v1_ReportResult)[];
}

export interface ReportStatusesReply__Output {
  /**
   * One per report, in the order of the request.
   */
  'results': (_worker_v1_ReportResult__Output)[];
}
