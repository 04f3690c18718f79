// Tests that proto/fedprllm.proto agrees with the C++ mask codec: shared enum values, and
// every framed message far below gRPC's 4 MB default whatever the model size.
#include <string>

#include "common/mask_codec.h"
#include "gtest/gtest.h"
#include "proto/fedprllm.grpc.pb.h"
#include "proto/fedprllm.pb.h"

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
  h->set_tensor_name(std::string(256, 'n'));
  for (int i = 0; i < 8; ++i) h->add_shape(int64_t{1} << 40);
  h->mutable_pattern()->set_n(2);
  h->mutable_pattern()->set_m(4);
  h->set_encoded_bytes(int64_t{1} << 40);
  h->set_raw_bytes(int64_t{1} << 40);
  EXPECT_LT(header.ByteSizeLong(), 1024u);
}

TEST(ProtoTest, CodecPayloadMapsOntoMessages) {
  PackedMask mask({64, 64});
  for (int64_t i = 0; i < mask.numel(); i += 3) mask.Set(i, true);
  auto p = EncodeMask("model.layers.0.self_attn.q_proj.weight", mask, {}, 100);
  ASSERT_TRUE(p.ok()) << p.status();
  int64_t wire = 0;
  v1::UploadChunk msg;
  v1::TensorHeader* h = msg.mutable_header();
  h->set_kind(static_cast<v1::PayloadKind>(p->header.kind));
  h->set_tensor_name(p->header.tensor_name);
  for (int64_t d : p->header.shape) h->add_shape(d);
  h->set_declared_count(p->header.declared_count);
  h->set_encoding(static_cast<v1::PayloadEncoding>(p->header.encoding));
  h->set_encoded_bytes(p->header.encoded_bytes);
  h->set_raw_bytes(p->header.raw_bytes);
  wire += h->ByteSizeLong() + 2;
  for (const PayloadChunk& c : p->chunks) {
    v1::PayloadData* d = msg.mutable_chunk();
    d->set_chunk_index(c.chunk_index);
    d->set_offset(c.offset);
    d->set_data(c.data);
    d->set_crc32c(c.crc32c);
    d->set_last(c.last);
    wire += d->ByteSizeLong() + 2;
  }
  EXPECT_LE(wire, p->WireBytesUpperBound());
}

}  // namespace
}  // namespace fedprllm
