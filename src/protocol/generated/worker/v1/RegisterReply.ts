// Original file: proto/worker.proto


export interface RegisterReply {
}

export interface RegisterReply__Output {
}
