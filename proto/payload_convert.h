// Conversions at the gRPC edge, shared by fedprllm-server and fedprllm-client: the codec's
// plain C++ payload structs (common/mask_codec.h) to and from the proto messages, and
// absl::Status to and from grpc::Status (codes map 1:1, docs/round_protocol.md §7).
//
//   v1::UploadChunk msg;
//   HeaderToProto(payload.header, msg.mutable_header());
//   TensorPayloadHeader back = HeaderFromProto(msg.header());   // validated later by an assembler
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "common/mask_codec.h"
#include "proto/fedprllm.pb.h"

namespace fedprllm {

// Copies every field. Never fails: the codec's structs hold only valid enum values.
void HeaderToProto(const TensorPayloadHeader& header, v1::TensorHeader* out);
void ChunkToProto(const PayloadChunk& chunk, v1::PayloadData* out);

// Copies every field without judging it: numeric kinds and encodings the codec does not
// know are carried through as-is so that the assembler refuses them with the spec's code
// (UNIMPLEMENTED for a kind, INVALID_ARGUMENT for an encoding).
TensorPayloadHeader HeaderFromProto(const v1::TensorHeader& header);
// Moves the data out of `chunk` when given an rvalue-able message.
PayloadChunk ChunkFromProto(v1::PayloadData* chunk);

// Protobuf encoding size of a message, plus the 5-byte gRPC length prefix: what one
// message costs on a gRPC stream above HTTP/2 framing and TLS.
int64_t GrpcMessageBytes(const google::protobuf::MessageLite& message);

// absl::Status <-> grpc::Status: the numeric codes are identical by design.
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace fedprllm
