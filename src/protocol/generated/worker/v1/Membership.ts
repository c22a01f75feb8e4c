// Original file: proto/worker.proto

/**
 * Whether the master counts the node as a member. A master that predates the field leaves it unspecified.
 */
export const Membership = {
  MEMBERSHIP_UNSPECIFIED: 'MEMBERSHIP_UNSPECIFIED',
  /**
   * The node is registered: the heartbeat was recorded.
   */
  MEMBER: 'MEMBER',
  /**
   * The master does not know the node: it registers again.
   */
  NOT_MEMBER: 'NOT_MEMBER',
} as const;

/**
 * Whether the master counts the node as a member. A master that predates the field leaves it unspecified.
 */
export type Membership =
  | 'MEMBERSHIP_UNSPECIFIED'
  | 0
  /**
   * The node is registered: the heartbeat was recorded.
   */
  | 'MEMBER'
  | 1
  /**
   * The master does not know the node: it registers again.
   */
  | 'NOT_MEMBER'
  | 2

/**
 * Whether the master counts the node as a member. A master that predates the field leaves it unspecified.
 */
export type Membership__Output = typeof Membership[keyof typeof Membership]
