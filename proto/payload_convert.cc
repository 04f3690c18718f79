#include "proto/payload_convert.h"

#include <string>
#include <utility>

namespace fedprllm {

void HeaderToProto(const TensorPayloadHeader& header, v1::TensorHeader* out) {
  out->Clear();
  out->set_kind(static_cast<v1::PayloadKind>(header.kind));
  out->set_tensor_name(header.tensor_name);
  for (int64_t d : header.shape) out->add_shape(d);
  if (header.pattern.n != 0 || header.pattern.m != 0) {
    out->mutable_pattern()->set_n(header.pattern.n);
    out->mutable_pattern()->set_m(header.pattern.m);
  }
  out->set_declared_count(header.declared_count);
  out->set_encoding(static_cast<v1::PayloadEncoding>(header.encoding));
  out->set_encoded_bytes(header.encoded_bytes);
  out->set_raw_bytes(header.raw_bytes);
}

void ChunkToProto(const PayloadChunk& chunk, v1::PayloadData* out) {
  out->set_chunk_index(chunk.chunk_index);
  out->set_offset(chunk.offset);
  out->set_data(chunk.data);
  out->set_crc32c(chunk.crc32c);
  out->set_last(chunk.last);
}

TensorPayloadHeader HeaderFromProto(const v1::TensorHeader& header) {
  TensorPayloadHeader out;
  out.kind = static_cast<PayloadKind>(header.kind());
  out.tensor_name = header.tensor_name();
  out.shape.assign(header.shape().begin(), header.shape().end());
  out.pattern.n = header.pattern().n();
  out.pattern.m = header.pattern().m();
  out.declared_count = header.declared_count();
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
