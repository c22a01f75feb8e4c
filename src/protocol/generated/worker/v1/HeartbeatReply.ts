// Original file: proto/worker.proto


export interface HeartbeatReply {
}

export interface HeartbeatReply__Output {
}
