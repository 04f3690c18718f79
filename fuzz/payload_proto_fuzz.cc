// Fuzz target: payloads as they arrive over gRPC. The input is one flags byte, then a stream
// of varint-length-delimited protobuf messages: UploadChunk (what the server's upload reactor
// reads) or DecisionChunk (what the client reads back), parsed, converted with
// proto/payload_convert.h against a fixed job's tensor table, and fed to the assemblers
// of common/mask_codec.h the way server/fedprllm_service.cc and client/federation_client.cc
// drive them.
//
//   flags bit0: DecisionChunk stream (else UploadChunk)
//         bit1: the job has weight scaling (decisions may carry WEIGHT_SCALE payloads)
//         bit2: the job's pattern is 2:4 (else unstructured)
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/util/delimited_message_util.h>

#include "common/mask_codec.h"
#include "common/status_macros.h"
#include "fuzz/fuzz_support.h"
#include "fuzz/payload_bytes.h"
#include "proto/fedprllm.pb.h"
#include "proto/payload_convert.h"

namespace fedprllm::fuzz {
namespace {

// Messages per input, so one input stays cheap.
constexpr int kMaxMessages = 64;

// The fixed job: kFuzzTensorNames, all in layer 0 except lm_head.weight (layer 1, so it is
// in the table but not in the round).
v1::JobSpec FuzzJob(bool weight_scaling, bool two_four) {
  v1::JobSpec job;
  job.set_strategy(v1::STRATEGY_ONE_SHOT);
  job.set_sparsity(0.5);
  if (two_four) {
    job.mutable_pattern()->set_n(2);
    job.mutable_pattern()->set_m(4);
  }
  job.set_num_layers(2);
  for (size_t i = 0; i < kFuzzTensorNames.size(); ++i) {
    v1::TensorSpec* t = job.add_tensors();
    t->set_name(kFuzzTensorNames[i]);
    for (int64_t d : kFuzzTensorShapes[i]) t->add_shape(d);
    t->set_layer(i + 1 == kFuzzTensorNames.size() ? 1 : 0);
  }
  job.set_weight_scaling(weight_scaling);
  job.set_max_chunk_bytes(256);
  return job;
}

std::map<std::string, std::vector<int64_t>> RoundShapes(const v1::JobSpec& job) {
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const v1::TensorSpec& t : job.tensors()) {
    if (t.layer() == 0) shapes[t.name()] = std::vector<int64_t>(t.shape().begin(), t.shape().end());
  }
  return shapes;
}

// The server's UploadPayloads loop (server/fedprllm_service.cc), without the session checks.
absl::Status FuzzUpload(const std::vector<v1::UploadChunk>& stream, const v1::JobSpec& job) {
  const JobTensorTable table(job);
  const std::map<std::string, std::vector<int64_t>> shapes = RoundShapes(job);
  std::optional<MaskAssembler> current;
  std::set<std::string> received;
  for (v1::UploadChunk message : stream) {
    if (message.has_header()) {
      if (current.has_value()) return absl::InvalidArgumentError("header before the last chunk");
      if (message.header().kind() != v1::PAYLOAD_KIND_PRUNE_MASK) return absl::UnimplementedError("kind");
      absl::StatusOr<PayloadHeader> header = HeaderFromProto(message.header(), table);
      if (!header.ok()) return header.status();
      for (const PayloadTensor& t : header->tensors) {
        if (shapes.count(t.name) == 0 || !received.insert(t.name).second) {
          return absl::InvalidArgumentError("tensor not in the round, or sent twice");
        }
      }
      MaskExpectations expect;
      expect.shapes = shapes;
      expect.pattern = MaskPattern{job.pattern().n(), job.pattern().m()};
      expect.max_chunk_bytes = job.max_chunk_bytes();
      absl::StatusOr<MaskAssembler> assembler = MaskAssembler::Create(*std::move(header), expect);
      if (!assembler.ok()) return assembler.status();
      current.emplace(*std::move(assembler));
    } else if (message.has_chunk()) {
      if (!current.has_value()) return absl::InvalidArgumentError("chunk before any header");
      RETURN_IF_ERROR(current->AddChunk(ChunkFromProto(message.mutable_chunk())));
      (void)current->TakeDecoded();
      if (current->complete()) {
        RETURN_IF_ERROR(current->Finish().status());
        current.reset();
      }
    } else if (!message.keepalive()) {
      return absl::InvalidArgumentError("empty message");
    }
  }
  return absl::OkStatus();
}

// The client's decision reader (client/federation_client.cc), masks and weight scales.
absl::Status FuzzDecisions(const std::vector<v1::DecisionChunk>& stream, const v1::JobSpec& job) {
  const JobTensorTable table(job);
  const std::map<std::string, std::vector<int64_t>> shapes = RoundShapes(job);
  std::set<std::string> masks_seen;
  std::optional<MaskAssembler> mask;
  std::optional<Float32Assembler> scale;
  auto finish = [&]() -> absl::Status {
    absl::Status status;
    if (mask.has_value()) status = mask->Finish().status();
    if (scale.has_value()) status = scale->Finish().status();
    mask.reset();
    scale.reset();
    return status;
  };
  for (v1::DecisionChunk message : stream) {
    if (message.has_header()) {
      if ((mask.has_value() && !mask->complete()) || (scale.has_value() && !scale->complete())) {
        return absl::InvalidArgumentError("header before the last chunk");
      }
      RETURN_IF_ERROR(finish());
      absl::StatusOr<PayloadHeader> header = HeaderFromProto(message.header(), table);
      if (!header.ok()) return header.status();
      if (header->kind == PayloadKind::kPruneMask) {
        for (const PayloadTensor& t : header->tensors) {
          if (!masks_seen.insert(t.name).second) return absl::InvalidArgumentError("mask sent twice");
        }
        MaskExpectations expect;
        expect.shapes = shapes;
        expect.pattern = MaskPattern{job.pattern().n(), job.pattern().m()};
        expect.max_chunk_bytes = job.max_chunk_bytes();
        absl::StatusOr<MaskAssembler> a = MaskAssembler::Create(*std::move(header), expect);
        if (!a.ok()) return a.status();
        mask.emplace(*std::move(a));
      } else if (header->kind == PayloadKind::kWeightScale && job.weight_scaling()) {
        if (header->tensors.size() != 1 || masks_seen.count(header->tensors[0].name) == 0 ||
            shapes.count(header->tensors[0].name) == 0) {
          return absl::InvalidArgumentError("WEIGHT_SCALE without its mask");
        }
        Float32Expectations expect;
        expect.shape = shapes.at(header->tensors[0].name);
        expect.max_chunk_bytes = job.max_chunk_bytes();
        absl::StatusOr<Float32Assembler> a = Float32Assembler::Create(*std::move(header), expect);
        if (!a.ok()) return a.status();
        scale.emplace(*std::move(a));
      } else {
        return absl::UnimplementedError("kind");
      }
    } else if (message.has_chunk()) {
      const PayloadChunk chunk = ChunkFromProto(message.mutable_chunk());
      absl::Status added = absl::InvalidArgumentError("chunk before any header");
      if (mask.has_value()) added = mask->AddChunk(chunk);
      if (scale.has_value()) added = scale->AddChunk(chunk);
      RETURN_IF_ERROR(added);
    } else {
      return absl::InvalidArgumentError("empty message");
    }
  }
  return finish();
}

// Parses up to kMaxMessages delimited messages of type M; stops at the first bad one (the
// stream would be cancelled there).
template <typename M>
std::vector<M> ParseStream(const uint8_t* data, size_t size) {
  google::protobuf::io::ArrayInputStream bytes(data, static_cast<int>(size));
  std::vector<M> stream;
  while (stream.size() < kMaxMessages) {
    M message;
    bool clean_eof = false;
    if (!google::protobuf::util::ParseDelimitedFromZeroCopyStream(&message, &bytes, &clean_eof)) break;
    // What the sender's own GrpcMessageBytes says it costs; must not fail on anything parsed.
    (void)GrpcMessageBytes(message);
    stream.push_back(std::move(message));
  }
  return stream;
}

}  // namespace
}  // namespace fedprllm::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fedprllm::fuzz;
  if (size == 0 || size > (1u << 24)) return 0;
  const uint8_t flags = data[0];
  const fedprllm::v1::JobSpec job = FuzzJob((flags & 2) != 0, (flags & 4) != 0);
  if (flags & 1) {
    Report("decisions", FuzzDecisions(ParseStream<fedprllm::v1::DecisionChunk>(data + 1, size - 1), job));
  } else {
    Report("upload", FuzzUpload(ParseStream<fedprllm::v1::UploadChunk>(data + 1, size - 1), job));
  }
  return 0;
}
