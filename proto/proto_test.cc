// Tests that proto/fedprllm.proto agrees with the C++ mask codec: shared enum values, header
// conversion through the job's tensor table, the bytes an upload costs, and every framed
// message far below gRPC's 4 MB default whatever the model size.
#include <iostream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "common/mask_codec.h"
#include "gtest/gtest.h"
#include "proto/fedprllm.grpc.pb.h"
#include "proto/fedprllm.pb.h"
#include "proto/payload_convert.h"

namespace fedprllm {
namespace {

static_assert(static_cast<int>(PayloadKind::kPruneMask) == v1::PAYLOAD_KIND_PRUNE_MASK);
static_assert(static_cast<int>(PayloadEncoding::kRawBits) == v1::PAYLOAD_ENCODING_RAW_BITS);
static_assert(static_cast<int>(PayloadEncoding::kZstdBits) == v1::PAYLOAD_ENCODING_ZSTD_BITS);

TEST(ProtoTest, LargestMessagesStayFarBelowGrpcDefault) {
  constexpr size_t kGrpcDefault = 4 * 1024 * 1024;
  v1::UploadChunk chunk;
  chunk.set_session_token(std::string(64, 't'));
  chunk.set_round(1 << 30);
  v1::PayloadData* data = chunk.mutable_chunk();
  data->set_chunk_index(int64_t{1} << 40);
  data->set_offset(int64_t{1} << 40);
  data->set_data(std::string(kDefaultMaxChunkBytes, '\xff'));
  data->set_crc32c(0xFFFFFFFFu);
  data->set_last(true);
  EXPECT_LT(chunk.ByteSizeLong(), kGrpcDefault / 3);

  v1::UploadChunk header;
  header.set_session_token(std::string(64, 't'));
  v1::TensorHeader* h = header.mutable_header();
  h->set_kind(v1::PAYLOAD_KIND_PRUNE_MASK);
  for (size_t i = 0; i < kMaxPayloadTensors; ++i) {
    h->add_tensor_indices(1 << 30);
    h->add_declared_counts(int64_t{1} << 40);
  }
  h->mutable_pattern()->set_n(2);
  h->mutable_pattern()->set_m(4);
  h->set_encoded_bytes(int64_t{1} << 40);
  h->set_raw_bytes(int64_t{1} << 40);
  EXPECT_LT(header.ByteSizeLong(), 64u * 1024);
}

v1::JobSpec JobOf(const std::vector<std::pair<std::string, PackedMask>>& masks) {
  v1::JobSpec job;
  for (const auto& [name, mask] : masks) {
    v1::TensorSpec* t = job.add_tensors();
    t->set_name(name);
    for (int64_t d : mask.shape()) t->add_shape(d);
  }
  return job;
}

// The bytes an upload of `payload` costs on a gRPC stream: one message for the header (the
// first of the stream, so with a session token and round) and one per chunk.
int64_t UploadBytes(const EncodedPayload& payload, const JobTensorTable& table) {
  v1::UploadChunk header;
  header.set_session_token(std::string(36, 't'));
  header.set_round(3);
  EXPECT_TRUE(HeaderToProto(payload.header, table, header.mutable_header()).ok());
  int64_t wire = GrpcMessageBytes(header);
  for (const PayloadChunk& c : payload.chunks) {
    v1::UploadChunk chunk;
    ChunkToProto(c, chunk.mutable_chunk());
    wire += GrpcMessageBytes(chunk);
  }
  return wire;
}

TEST(ProtoTest, HeaderRoundTripsThroughTheJobTable) {
  std::vector<std::pair<std::string, PackedMask>> masks = {{"a.weight", PackedMask({4, 8})},
                                                           {"b.weight", PackedMask({3, 5})}};
  masks[0].second.Set(5, true);
  const v1::JobSpec job = JobOf(masks);
  const JobTensorTable table(job);
  auto p = EncodeMasks({masks[1], masks[0]}, {});  // any order of the job's tensors
  ASSERT_TRUE(p.ok()) << p.status();
  v1::TensorHeader proto;
  ASSERT_TRUE(HeaderToProto(p->header, table, &proto).ok());
  EXPECT_EQ(proto.tensor_indices_size(), 2);
  EXPECT_EQ(proto.tensor_indices(0), 1);
  EXPECT_EQ(proto.declared_counts(1), 1);
  auto back = HeaderFromProto(proto, table);
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->tensors.size(), 2u);
  EXPECT_EQ(back->tensors[0].name, "b.weight");
  EXPECT_EQ(back->tensors[0].shape, (std::vector<int64_t>{3, 5}));
  EXPECT_EQ(back->tensors[1].declared_count, 1);
  EXPECT_EQ(back->raw_bytes, p->header.raw_bytes);

  proto.set_tensor_indices(1, 2);
  EXPECT_EQ(HeaderFromProto(proto, table).status().code(), absl::StatusCode::kInvalidArgument);
  proto.set_tensor_indices(1, 0);
  proto.add_declared_counts(7);
  EXPECT_EQ(HeaderFromProto(proto, table).status().code(), absl::StatusCode::kInvalidArgument);
  auto other = EncodeMask("c.weight", PackedMask({2, 2}), {});
  EXPECT_EQ(HeaderToProto(other->header, table, &proto).code(), absl::StatusCode::kNotFound);
}

TEST(ProtoTest, OnePayloadPerRoundCostsAtMost102BitsPerWeightOnStories260K) {
  // A stories260K decoder layer: q, o [64, 64]; k, v [32, 64]; gate, up [172, 64]; down
  // [64, 172]. 50% random masks do not compress: this is the iterative strategy's upload,
  // the framing-heaviest case (one layer per round); one-shot sends five layers at once.
  const std::vector<std::vector<int64_t>> shapes = {{64, 64}, {32, 64}, {32, 64}, {64, 64},
                                                    {172, 64}, {172, 64}, {64, 172}};
  for (int layers : {1, 5}) {
    std::vector<std::pair<std::string, PackedMask>> masks;
    std::mt19937 rng(layers);
    int64_t weights = 0;
    for (int l = 0; l < layers; ++l) {
      for (size_t k = 0; k < shapes.size(); ++k) {
        PackedMask m(shapes[k]);
        for (int64_t i = 0; i < m.numel(); ++i) m.Set(i, rng() & 1);
        weights += m.numel();
        masks.emplace_back("model.layers." + std::to_string(l) + ".t" + std::to_string(k), std::move(m));
      }
    }
    const v1::JobSpec job = JobOf(masks);
    auto p = EncodeMasks(masks, {});
    ASSERT_TRUE(p.ok()) << p.status();
    const double bits = 8.0 * UploadBytes(*p, JobTensorTable(job)) / weights;
    std::cout << layers << " stories260K layer(s) per upload: " << bits << " bits/weight\n";
    EXPECT_LE(bits, 1.02);
    EXPECT_LE(UploadBytes(*p, JobTensorTable(job)), p->WireBytesUpperBound() + 36 + 2 + 2 + 10);
  }
}

}  // namespace
}  // namespace fedprllm
