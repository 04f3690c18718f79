// Conversions between the codec's payload structs and the proto messages (tensors named by
// their index in the job), and between absl and gRPC statuses.
#include "proto/payload_convert.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace fedprllm {

JobTensorTable::JobTensorTable(const v1::JobSpec& job) {
  for (const v1::TensorSpec& t : job.tensors()) {
    index_.emplace(t.name(), static_cast<int32_t>(names_.size()));
    names_.push_back(t.name());
    shapes_.emplace_back(t.shape().begin(), t.shape().end());
  }
}

absl::StatusOr<int32_t> JobTensorTable::IndexOf(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) return absl::NotFoundError(absl::StrCat("tensor '", name, "' is not part of the job"));
  return it->second;
}

absl::Status HeaderToProto(const PayloadHeader& header, const JobTensorTable& table, v1::TensorHeader* out) {
  out->Clear();
  out->set_kind(static_cast<v1::PayloadKind>(header.kind));
  for (const PayloadTensor& t : header.tensors) {
    ASSIGN_OR_RETURN(const int32_t index, table.IndexOf(t.name));
    out->add_tensor_indices(index);
    out->add_declared_counts(t.declared_count);
  }
  if (header.pattern.n != 0 || header.pattern.m != 0) {
    out->mutable_pattern()->set_n(header.pattern.n);
    out->mutable_pattern()->set_m(header.pattern.m);
  }
  out->set_encoding(static_cast<v1::PayloadEncoding>(header.encoding));
  out->set_encoded_bytes(header.encoded_bytes);
  out->set_raw_bytes(header.raw_bytes);
  return absl::OkStatus();
}

void ChunkToProto(const PayloadChunk& chunk, v1::PayloadData* out) {
  out->set_chunk_index(chunk.chunk_index);
  out->set_offset(chunk.offset);
  out->set_data(chunk.data);
  out->set_crc32c(chunk.crc32c);
  out->set_last(chunk.last);
}

absl::StatusOr<PayloadHeader> HeaderFromProto(const v1::TensorHeader& header, const JobTensorTable& table) {
  if (header.declared_counts_size() != header.tensor_indices_size()) {
    return absl::InvalidArgumentError(absl::StrCat("payload header lists ", header.tensor_indices_size(),
                                                   " tensors but ", header.declared_counts_size(), " declared counts"));
  }
  PayloadHeader out;
  out.kind = static_cast<PayloadKind>(header.kind());
  for (int i = 0; i < header.tensor_indices_size(); ++i) {
    const int32_t index = header.tensor_indices(i);
    if (index < 0 || index >= table.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("payload header names tensor index ", index, ", outside the job's ", table.size(), " tensors"));
    }
    out.tensors.push_back({table.names_[index], table.shapes_[index], header.declared_counts(i)});
  }
  out.pattern.n = header.pattern().n();
  out.pattern.m = header.pattern().m();
  out.encoding = static_cast<PayloadEncoding>(header.encoding());
  out.encoded_bytes = header.encoded_bytes();
  out.raw_bytes = header.raw_bytes();
  return out;
}

PayloadChunk ChunkFromProto(v1::PayloadData* chunk) {
  PayloadChunk out;
  out.chunk_index = chunk->chunk_index();
  out.offset = chunk->offset();
  out.data = std::move(*chunk->mutable_data());
  out.crc32c = chunk->crc32c();
  out.last = chunk->last();
  return out;
}

int64_t GrpcMessageBytes(const google::protobuf::MessageLite& message) {
  return static_cast<int64_t>(message.ByteSizeLong()) + 5;
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

}  // namespace fedprllm
