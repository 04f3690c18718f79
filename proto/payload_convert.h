// Conversions at the gRPC edge, shared by fedprllm-server and fedprllm-client: the codec's
// plain C++ payload structs (common/mask_codec.h) to and from the proto messages, and
// absl::Status to and from grpc::Status (codes map 1:1, docs/round_protocol.md §7).
//
//   const JobTensorTable table(job_spec);
//   v1::UploadChunk msg;
//   RETURN_IF_ERROR(HeaderToProto(payload.header, table, msg.mutable_header()));
//   ASSIGN_OR_RETURN(PayloadHeader back, HeaderFromProto(msg.header(), table));  // then an assembler
#pragma once

#include <grpcpp/support/status.h>

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/mask_codec.h"
#include "proto/fedprllm.pb.h"

namespace fedprllm {

// JoinRequest/JoinResponse.protocol_version spoken by this build's server and client.
inline constexpr uint32_t kProtocolVersion = 1;

// The job's tensor table (JobSpec.tensors, in order): on the wire a payload header names
// each of its tensors by its index here, and the table supplies the name and shape.
class JobTensorTable {
 public:
  explicit JobTensorTable(const v1::JobSpec& job);
  // NOT_FOUND for a name outside the job.
  absl::StatusOr<int32_t> IndexOf(const std::string& name) const;
  int32_t size() const { return static_cast<int32_t>(names_.size()); }

 private:
  friend absl::StatusOr<PayloadHeader> HeaderFromProto(const v1::TensorHeader&, const JobTensorTable&);
  std::vector<std::string> names_;
  std::vector<std::vector<int64_t>> shapes_;
  std::map<std::string, int32_t> index_;
};

// Copies every field, naming tensors by their table index. Fails (NOT_FOUND) only for a
// tensor outside the job.
absl::Status HeaderToProto(const PayloadHeader& header, const JobTensorTable& table, v1::TensorHeader* out);
void ChunkToProto(const PayloadChunk& chunk, v1::PayloadData* out);

// Resolves each tensor index to the table's name and shape and copies the other fields
// without judging them: numeric kinds and encodings the codec does not know are carried
// through as-is so that the assembler refuses them with the spec's code (UNIMPLEMENTED for
// a kind, INVALID_ARGUMENT for an encoding). Fails (INVALID_ARGUMENT) for an index outside
// the table or a declared_counts list whose length differs from tensor_indices.
absl::StatusOr<PayloadHeader> HeaderFromProto(const v1::TensorHeader& header, const JobTensorTable& table);
// Moves the data out of `chunk` when given an rvalue-able message.
PayloadChunk ChunkFromProto(v1::PayloadData* chunk);

// Protobuf encoding size of a message, plus the 5-byte gRPC length prefix: what one
// message costs on a gRPC stream above HTTP/2 framing and TLS.
int64_t GrpcMessageBytes(const google::protobuf::MessageLite& message);

// absl::Status <-> grpc::Status: the numeric codes are identical by design.
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace fedprllm
