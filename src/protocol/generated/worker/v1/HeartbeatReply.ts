// Original file: proto/worker.proto

import type { Membership as _worker_v1_Membership, Membership__Output as _worker_v1_Membership__Output } from '../../worker/v1/Membership.js';

export interface HeartbeatReply {
  'membership'?: (_worker_v1_Membership);
  /**
   * As in `RegisterReply`: an incarnation other than the one `Register` answered means the master restarted.
   */
  'incarnation'?: (string);
}

export interface HeartbeatReply__Output {
  'membership': (_worker_v1_Membership__Output);
  /**
   * As in `RegisterReply`: an incarnation other than the one `Register` answered means the master restarted.
   */
  'incarnation': (string);
}
