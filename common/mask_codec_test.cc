// Tests for the mask wire codec against docs/mask_wire_format.md: round trips, the size
// budget, and one rejection per receiver check of §6.
#include "common/mask_codec.h"

#include <zstd.h>

#include <algorithm>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/crc32c.h"
#include "common/status_macros.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fedprllm {
namespace {

using ::testing::HasSubstr;

constexpr char kName[] = "model.layers.0.mlp.up_proj.weight";

PackedMask RandomMask(std::vector<int64_t> shape, double p_one, uint32_t seed) {
  std::mt19937 rng(seed);
  std::bernoulli_distribution bit(p_one);
  std::vector<uint8_t> v(NumElements(shape));
  for (auto& b : v) b = bit(rng);
  return PackedMask::FromBools(std::move(shape), v);
}

// Exactly n of every m consecutive elements set, at random positions.
PackedMask RandomNM(std::vector<int64_t> shape, int n, int m, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(NumElements(shape));
  std::vector<int> idx(m);
  for (size_t g = 0; g < v.size(); g += m) {
    for (int k = 0; k < m; ++k) idx[k] = k;
    std::shuffle(idx.begin(), idx.end(), rng);
    for (int k = 0; k < n; ++k) v[g + idx[k]] = 1;
  }
  return PackedMask::FromBools(std::move(shape), v);
}

MaskExpectations Expect(std::vector<int64_t> shape, MaskPattern pattern = {}) {
  MaskExpectations e;
  e.shapes = {{kName, std::move(shape)}};
  e.pattern = pattern;
  return e;
}

// Decodes a one-tensor payload.
absl::StatusOr<PackedMask> DecodeMask(const EncodedPayload& payload, const MaskExpectations& expect) {
  ASSIGN_OR_RETURN(std::vector<PackedMask> masks, DecodeMasks(payload, expect));
  if (masks.size() != 1) return absl::InternalError(absl::StrCat(masks.size(), " masks decoded, expected 1"));
  return std::move(masks.front());
}

// A one-chunk payload carrying arbitrary wire bytes, with a correct CRC.
EncodedPayload Handmade(std::vector<int64_t> shape, PayloadEncoding encoding, std::string bytes,
                        int64_t declared_count) {
  EncodedPayload p;
  p.header.raw_bytes = (NumElements(shape) + 7) / 8;
  p.header.tensors = {{kName, std::move(shape), declared_count}};
  p.header.encoding = encoding;
  p.header.encoded_bytes = static_cast<int64_t>(bytes.size());
  PayloadChunk c;
  c.crc32c = crc32c::Value(bytes);
  c.data = std::move(bytes);
  c.last = true;
  p.chunks.push_back(std::move(c));
  return p;
}

std::string Zstd(const std::string& in, bool with_content_size) {
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, with_content_size ? 1 : 0);
  std::string out(ZSTD_compressBound(in.size()), '\0');
  const size_t n = ZSTD_compress2(cctx, out.data(), out.size(), in.data(), in.size());
  ZSTD_freeCCtx(cctx);
  EXPECT_FALSE(ZSTD_isError(n));
  out.resize(n);
  return out;
}

TEST(MaskCodecTest, SpecBitOrderExample) {
  PackedMask m({2, 5});
  for (int i : {0, 3, 9}) m.Set(i, true);
  auto p = EncodeMask(kName, m, {});
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->header.encoding, PayloadEncoding::kRawBits);
  EXPECT_EQ(p->chunks[0].data, std::string("\x09\x02", 2));
  EXPECT_EQ(p->header.tensors[0].declared_count, 3);
  EXPECT_EQ(p->header.raw_bytes, 2);
}

TEST(MaskCodecTest, RoundTripsAwkwardSizesAndChunkings) {
  const std::vector<std::vector<int64_t>> shapes = {{1},      {7},      {9},       {3, 5},
                                                    {13, 17}, {64, 64}, {999, 37}, {2, 3, 5, 7}};
  uint32_t seed = 1;
  for (const auto& shape : shapes) {
    for (double p : {0.0, 0.1, 0.5, 1.0}) {
      for (size_t chunk : {size_t{1}, size_t{3}, kDefaultMaxChunkBytes}) {
        const PackedMask mask = RandomMask(shape, p, seed++);
        auto payload = EncodeMask(kName, mask, {}, chunk);
        ASSERT_TRUE(payload.ok()) << payload.status();
        EXPECT_EQ(payload->header.tensors[0].declared_count, mask.CountOnes());
        auto decoded = DecodeMask(*payload, Expect(shape));
        ASSERT_TRUE(decoded.ok()) << decoded.status() << " shape " << ShapeToString(shape);
        EXPECT_EQ(*decoded, mask);
      }
    }
  }
}

TEST(MaskCodecTest, MultiChunkFraming) {
  const PackedMask mask = RandomMask({2048, 1024}, 0.5, 3);  // 256 KiB raw.
  auto p = EncodeMask(kName, mask, {}, 10000);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->header.encoding, PayloadEncoding::kRawBits);
  ASSERT_EQ(p->chunks.size(), 27u);  // ceil(262144 / 10000)
  int64_t offset = 0;
  for (size_t i = 0; i < p->chunks.size(); ++i) {
    const PayloadChunk& c = p->chunks[i];
    EXPECT_EQ(c.chunk_index, static_cast<int64_t>(i));
    EXPECT_EQ(c.offset, offset);
    EXPECT_EQ(c.last, i + 1 == p->chunks.size());
    if (!c.last) EXPECT_EQ(c.data.size(), 10000u);
    EXPECT_EQ(c.crc32c, crc32c::Value(c.data));
    offset += static_cast<int64_t>(c.data.size());
  }
  EXPECT_EQ(offset, p->header.encoded_bytes);
  auto decoded = DecodeMask(*p, Expect({2048, 1024}));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, mask);
}

TEST(MaskCodecTest, CompressesOnlyWhereItPays) {
  // Incompressible: stays raw.
  auto random = EncodeMask(kName, RandomMask({512, 512}, 0.5, 4), {});
  ASSERT_TRUE(random.ok());
  EXPECT_EQ(random->header.encoding, PayloadEncoding::kRawBits);
  EXPECT_EQ(random->header.encoded_bytes, random->header.raw_bytes);

  // Structured: whole rows pruned, a regular 2:4 pattern, all-zero.
  PackedMask rows({512, 512});
  for (int64_t i = 0; i < 256 * 512; ++i) rows.Set(i, true);
  PackedMask regular({512, 512});
  for (int64_t i = 0; i < regular.numel(); i += 4) regular.Set(i, true), regular.Set(i + 3, true);
  const PackedMask zeros({512, 512});
  for (const auto& [mask, pattern] : std::vector<std::pair<PackedMask, MaskPattern>>{
           {rows, {}}, {regular, {2, 4}}, {zeros, {}}}) {
    auto p = EncodeMask(kName, mask, pattern);
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_EQ(p->header.encoding, PayloadEncoding::kZstdBits);
    EXPECT_LT(p->header.encoded_bytes, p->header.raw_bytes / 10);
    auto decoded = DecodeMask(*p, Expect({512, 512}, pattern));
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(*decoded, mask);
  }

  // Random 2:4 round-trips whichever encoding wins.
  const PackedMask nm = RandomNM({256, 512}, 2, 4, 5);
  auto p = EncodeMask(kName, nm, {2, 4});
  ASSERT_TRUE(p.ok()) << p.status();
  auto decoded = DecodeMask(*p, Expect({256, 512}, {2, 4}));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, nm);
}

TEST(MaskCodecTest, RandomHalfMaskCostsAtMost102BitsPerWeight) {
  // From 512x512 up, header and chunk framing stay under 2% of the 1 bit per weight.
  for (const std::vector<int64_t>& shape :
       {std::vector<int64_t>{512, 512}, std::vector<int64_t>{4096, 4096}}) {
    const PackedMask mask = RandomMask(shape, 0.5, 6);
    auto p = EncodeMask(kName, mask, {});
    ASSERT_TRUE(p.ok());
    const double bits = 8.0 * p->WireBytesUpperBound() / mask.numel();
    std::cout << ShapeToString(shape) << ": " << bits << " bits per weight\n";
    EXPECT_LE(bits, 1.02) << ShapeToString(shape);
  }
}

// ---- Rejections -------------------------------------------------------------------------

class RejectTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mask_ = RandomMask({64, 100}, 0.5, 8);  // 800 raw bytes, incompressible.
    auto p = EncodeMask(kName, mask_, {}, 300);
    ASSERT_TRUE(p.ok());
    payload_ = *p;
    ASSERT_EQ(payload_.chunks.size(), 3u);
  }
  absl::Status Decode(const MaskExpectations& e) { return DecodeMask(payload_, e).status(); }
  absl::Status Decode() { return Decode(Expect({64, 100})); }

  PackedMask mask_;
  EncodedPayload payload_;
};

TEST_F(RejectTest, BadCrc) {
  payload_.chunks[1].data[5] ^= 0x10;
  absl::Status s = Decode();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr(kName));
  EXPECT_THAT(s.message(), HasSubstr("chunk 1: crc32c"));
}

TEST_F(RejectTest, RejectedChunkIsNotStored) {
  auto a = MaskAssembler::Create(payload_.header, Expect({64, 100}));
  ASSERT_TRUE(a.ok());
  PayloadChunk bad = payload_.chunks[0];
  bad.crc32c ^= 1;
  EXPECT_EQ(a->AddChunk(bad).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(a->bytes_received(), 0);
  for (const auto& c : payload_.chunks) ASSERT_TRUE(a->AddChunk(c).ok());
  auto m = a->Finish();
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->size(), 1u);
  EXPECT_EQ(m->front(), mask_);
  EXPECT_EQ(a->Finish().status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(RejectTest, WrongChunkOrder) {
  std::swap(payload_.chunks[0], payload_.chunks[1]);
  absl::Status s = Decode();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("chunk 1: out of order, expected chunk 0"));
}

TEST_F(RejectTest, DuplicateChunk) {
  payload_.chunks.insert(payload_.chunks.begin() + 1, payload_.chunks[0]);
  EXPECT_THAT(Decode().message(), HasSubstr("chunk 0: out of order, expected chunk 1"));
}

TEST_F(RejectTest, WrongOffset) {
  payload_.chunks[1].offset += 1;
  EXPECT_THAT(Decode().message(), HasSubstr("chunk 1: offset is 301, expected 300"));
}

TEST_F(RejectTest, Truncated) {
  payload_.chunks.pop_back();
  absl::Status s = Decode();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("truncated: received 600 of 800 bytes in 2 chunks"));
}

TEST_F(RejectTest, LastFlagMismatch) {
  payload_.chunks[1].last = true;
  EXPECT_THAT(Decode().message(), HasSubstr("chunk 1: is marked last but ends at byte 600"));
  payload_.chunks[1].last = false;
  payload_.chunks[2].last = false;
  EXPECT_THAT(Decode().message(), HasSubstr("chunk 2: is not marked last"));
}

TEST_F(RejectTest, ChunkAfterLast) {
  PayloadChunk extra = payload_.chunks[2];
  extra.chunk_index = 3;
  extra.offset = 800;
  payload_.chunks.push_back(extra);
  EXPECT_THAT(Decode().message(), HasSubstr("chunk 3: arrives after the last chunk"));
}

TEST_F(RejectTest, ChunkBeyondEncodedBytes) {
  payload_.chunks[2].data += "xx";
  payload_.chunks[2].crc32c = crc32c::Value(payload_.chunks[2].data);
  EXPECT_THAT(Decode().message(), HasSubstr("ends at byte 802, beyond encoded_bytes 800"));
}

TEST_F(RejectTest, ChunkAboveReceiverLimit) {
  MaskExpectations e = Expect({64, 100});
  e.max_chunk_bytes = 299;
  absl::Status s = Decode(e);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), HasSubstr("chunk 0: is 300 bytes, above the limit of 299"));
}

TEST_F(RejectTest, WrongDeclaredCount) {
  payload_.header.tensors[0].declared_count += 1;
  absl::Status s = Decode();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr(absl::StrCat("mask has ", mask_.CountOnes(),
                                                  " pruned weights, declared_count is ",
                                                  mask_.CountOnes() + 1)));
  payload_.header.tensors[0].declared_count = 6401;
  EXPECT_THAT(Decode().message(), HasSubstr("declared_count 6401 is outside [0, 6400]"));
}

TEST_F(RejectTest, WrongShape) {
  absl::Status s = Decode(Expect({100, 64}));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("shape [64, 100] does not match the job's shape [100, 64]"));
  payload_.header.tensors[0].shape = {64, 0};
  EXPECT_THAT(Decode().message(), HasSubstr("has a dimension < 1"));
  payload_.header.tensors[0].shape = {};
  EXPECT_THAT(Decode().message(), HasSubstr("rank 0"));
  payload_.header.tensors[0].shape = {1 << 30, 1 << 30, 2};
  EXPECT_THAT(Decode().message(), HasSubstr("more than 2^40"));
}

TEST_F(RejectTest, SizeFieldsAndLimits) {
  MaskExpectations e = Expect({64, 100});
  e.max_tensor_raw_bytes = 799;
  EXPECT_EQ(Decode(e).code(), absl::StatusCode::kResourceExhausted);
  payload_.header.raw_bytes = 801;
  EXPECT_THAT(Decode().message(), HasSubstr("raw_bytes is 801, expected 800"));
  payload_.header.raw_bytes = 800;
  payload_.header.encoded_bytes = 799;
  EXPECT_THAT(Decode().message(), HasSubstr("RAW_BITS encoded_bytes is 799, expected 800"));
  payload_.header.encoding = PayloadEncoding::kZstdBits;
  payload_.header.encoded_bytes = 800;
  EXPECT_THAT(Decode().message(), HasSubstr("ZSTD_BITS encoded_bytes is 800, expected 1..799"));
  payload_.header.encoding = static_cast<PayloadEncoding>(9);
  EXPECT_THAT(Decode().message(), HasSubstr("unknown encoding 9"));
}

TEST_F(RejectTest, UnknownKindAndBadName) {
  payload_.header.kind = static_cast<PayloadKind>(2);
  EXPECT_EQ(Decode().code(), absl::StatusCode::kUnimplemented);
  payload_.header.kind = PayloadKind::kPruneMask;
  payload_.header.tensors[0].name = std::string(300, 'x');
  EXPECT_THAT(Decode().message(), HasSubstr("name is 300 bytes, expected 1..256"));
}

TEST(MaskCodecRejectTest, PaddingBitSet) {
  // 10 elements: bits 10..15 of the second byte are padding.
  auto p = Handmade({10}, PayloadEncoding::kRawBits, std::string("\x01\x80", 2), 2);
  absl::Status s = DecodeMask(p, Expect({10})).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("padding"));
  EXPECT_THAT(s.message(), HasSubstr(kName));
}

TEST(MaskCodecRejectTest, BadNMPattern) {
  // Two groups of 4 with 3 and 1 pruned: the total (4) is right for 2:4, group 0 is not.
  PackedMask m({2, 4});
  for (int i : {0, 1, 2, 5}) m.Set(i, true);
  absl::Status enc = EncodeMask(kName, m, {2, 4}).status();
  EXPECT_THAT(enc.message(), HasSubstr("pattern 2:4 violated in row 0, group 0"));

  auto p = EncodeMask(kName, m, {});
  ASSERT_TRUE(p.ok());
  p->header.pattern = {2, 4};
  absl::Status s = DecodeMask(*p, Expect({2, 4}, {2, 4})).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(),
              HasSubstr("violated in row 0, group 0 (flattened elements [0, 4)): 3 pruned, "
                        "expected exactly 2"));

  // Pattern mismatch with the job, malformed patterns, impossible declared counts.
  EXPECT_THAT(DecodeMask(*p, Expect({2, 4}, {1, 4})).status().message(),
              HasSubstr("pattern 2:4 does not match the job's pattern 1:4"));
  p->header.pattern = {2, 3};
  EXPECT_THAT(DecodeMask(*p, Expect({2, 4}, {2, 3})).status().message(),
              HasSubstr("not a multiple of m=3"));
  p->header.pattern = {5, 4};
  EXPECT_THAT(DecodeMask(*p, Expect({2, 4}, {5, 4})).status().message(),
              HasSubstr("pattern 5:4 is invalid"));
  p->header.pattern = {2, 4};
  p->header.tensors[0].declared_count = 3;
  EXPECT_THAT(DecodeMask(*p, Expect({2, 4}, {2, 4})).status().message(),
              HasSubstr("declared_count 3 is impossible for pattern 2:4, expected 4"));
}

TEST(MaskCodecRejectTest, ZstdBombAndGarbage) {
  const std::vector<int64_t> shape = {8000};  // raw_bytes 1000
  const std::string zeros_1mb(1 << 20, '\0');
  // Declares 1 MiB of content.
  auto bomb = Handmade(shape, PayloadEncoding::kZstdBits, Zstd(zeros_1mb, true), 0);
  ASSERT_LT(bomb.header.encoded_bytes, 1000);
  EXPECT_THAT(DecodeMask(bomb, Expect(shape)).status().message(),
              HasSubstr("zstd frame declares 1048576 bytes of content, expected raw_bytes 1000"));
  // Hides its content size: the bounded output buffer stops it.
  auto hidden = Handmade(shape, PayloadEncoding::kZstdBits, Zstd(zeros_1mb, false), 0);
  absl::Status s = DecodeMask(hidden, Expect(shape)).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("zstd frame decompresses to more than raw_bytes 1000"));
  // Corrupt data after a valid frame header.
  std::string corrupt = Zstd(std::string(1000, '\0'), true);
  for (size_t i = 12; i < corrupt.size(); ++i) corrupt[i] = static_cast<char>(0xA5);
  auto broken = Handmade(shape, PayloadEncoding::kZstdBits, corrupt, 0);
  EXPECT_EQ(DecodeMask(broken, Expect(shape)).status().code(), absl::StatusCode::kInvalidArgument);
  // Too short.
  auto shorter =
      Handmade(shape, PayloadEncoding::kZstdBits, Zstd(std::string(999, '\0'), false), 0);
  EXPECT_THAT(DecodeMask(shorter, Expect(shape)).status().message(),
              HasSubstr("zstd decompressed to 999 bytes, expected raw_bytes 1000"));
  // Not zstd at all.
  auto garbage = Handmade(shape, PayloadEncoding::kZstdBits, "not a zstd frame", 0);
  EXPECT_THAT(DecodeMask(garbage, Expect(shape)).status().message(), HasSubstr("not a zstd frame"));
  // Trailing bytes after a valid frame.
  auto trailing =
      Handmade(shape, PayloadEncoding::kZstdBits, Zstd(std::string(1000, '\0'), true) + "xyz", 0);
  EXPECT_THAT(DecodeMask(trailing, Expect(shape)).status().message(),
              HasSubstr("is not exactly one zstd frame (frame ends at byte"));
  // Two frames, each half of the content.
  const std::string half = Zstd(std::string(500, '\0'), true);
  auto two = Handmade(shape, PayloadEncoding::kZstdBits, half + half, 0);
  EXPECT_THAT(DecodeMask(two, Expect(shape)).status().message(),
              HasSubstr("zstd frame declares 500 bytes of content, expected raw_bytes 1000"));
  const std::string half_unsized = Zstd(std::string(500, '\0'), false);
  auto two_unsized = Handmade(shape, PayloadEncoding::kZstdBits, half_unsized + half_unsized, 0);
  EXPECT_THAT(DecodeMask(two_unsized, Expect(shape)).status().message(),
              HasSubstr("is not exactly one zstd frame (frame ends at byte"));
  // And the honest one decodes.
  auto honest = Handmade(shape, PayloadEncoding::kZstdBits, Zstd(std::string(1000, '\0'), true), 0);
  EXPECT_TRUE(DecodeMask(honest, Expect(shape)).ok());
}

TEST(MaskCodecRejectTest, EncoderRejectsBadInput) {
  EXPECT_FALSE(EncodeMask("", PackedMask({4}), {}).ok());
  EXPECT_FALSE(EncodeMask(kName, PackedMask({4}), {}, 0).ok());
  EXPECT_FALSE(EncodeMask(kName, PackedMask({0}), {}).ok());
  EXPECT_FALSE(EncodeMask(kName, PackedMask({4}), {1, 0}).ok());
}

// ---- float32 payloads (WEIGHT_SCALE, spec §7) ----------------------------------------------

TEST(Float32CodecTest, RoundTripsExactBitsRawAndZstd) {
  const std::vector<int64_t> shape = {7, 13};
  std::vector<float> varied(91), repetitive(91, 1.0f);
  for (size_t i = 0; i < varied.size(); ++i) varied[i] = 1.0f / static_cast<float>(i + 3);
  repetitive[5] = 0.5f;
  for (const auto& values : {varied, repetitive}) {
    for (size_t chunk : {size_t{1}, size_t{17}, kDefaultMaxChunkBytes}) {
      auto p = EncodeFloat32(kName, shape, values, PayloadKind::kWeightScale, chunk);
      ASSERT_TRUE(p.ok()) << p.status();
      EXPECT_EQ(p->header.raw_bytes, 4 * 91);
      EXPECT_EQ(p->header.tensors[0].declared_count, 91);
      Float32Expectations expect;
      expect.shape = shape;
      auto back = DecodeFloat32(*p, expect);
      ASSERT_TRUE(back.ok()) << back.status();
      EXPECT_EQ(*back, values);
    }
  }
  auto p = EncodeFloat32(kName, shape, repetitive);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->header.encoding, PayloadEncoding::kZstdF32);
}

TEST(Float32CodecTest, RejectsBadInput) {
  const std::vector<int64_t> shape = {2, 2};
  std::vector<float> values = {1, 2, 3, std::numeric_limits<float>::infinity()};
  EXPECT_THAT(EncodeFloat32(kName, shape, values).status().message(), HasSubstr("not finite"));
  values[3] = 4;
  EXPECT_THAT(EncodeFloat32(kName, {3}, values).status().message(), HasSubstr("4 values for shape"));
  auto p = EncodeFloat32(kName, shape, values);
  ASSERT_TRUE(p.ok());
  Float32Expectations expect;
  expect.shape = {4};
  EXPECT_THAT(DecodeFloat32(*p, expect).status().message(), HasSubstr("does not match the expected shape"));
  expect.shape = shape;
  EncodedPayload bad = *p;
  bad.header.kind = PayloadKind::kPruneMask;
  EXPECT_EQ(DecodeFloat32(bad, expect).status().code(), absl::StatusCode::kUnimplemented);
  bad = *p;
  bad.header.tensors[0].declared_count = 3;
  EXPECT_THAT(DecodeFloat32(bad, expect).status().message(), HasSubstr("declared_count 3"));
  bad = *p;
  bad.chunks[0].crc32c ^= 1;
  EXPECT_EQ(DecodeFloat32(bad, expect).status().code(), absl::StatusCode::kDataLoss);
  // A NaN smuggled in with a valid CRC is refused at Finish.
  bad = *p;
  ASSERT_EQ(bad.header.encoding, PayloadEncoding::kRawF32);
  bad.chunks[0].data.replace(12, 4, std::string("\x00\x00\xc0\x7f", 4));
  bad.chunks[0].crc32c = crc32c::Value(bad.chunks[0].data);
  EXPECT_THAT(DecodeFloat32(bad, expect).status().message(), HasSubstr("value 3 is not finite"));
  // A mask receiver refuses a float payload kind.
  MaskExpectations mexpect;
  mexpect.shapes = {{kName, shape}};
  EXPECT_EQ(DecodeMask(*p, mexpect).status().code(), absl::StatusCode::kUnimplemented);
}


// ---- payloads of several tensors ----------------------------------------------------------

std::vector<std::pair<std::string, PackedMask>> LayerOfMasks(MaskPattern pattern) {
  // Awkward sizes: per-tensor padding sits between tensors in the concatenated raw layout.
  std::vector<std::pair<std::string, PackedMask>> masks;
  const std::vector<std::vector<int64_t>> shapes = {{3, 12}, {5, 4}, {7, 8}, {1, 4}};
  for (size_t i = 0; i < shapes.size(); ++i) {
    PackedMask m = pattern.structured() ? RandomNM(shapes[i], pattern.n, pattern.m, 10 + i)
                                        : RandomMask(shapes[i], 0.5, 10 + i);
    masks.emplace_back(absl::StrCat("model.layers.0.t", i, ".weight"), std::move(m));
  }
  return masks;
}

MaskExpectations ExpectAll(const std::vector<std::pair<std::string, PackedMask>>& masks, MaskPattern pattern) {
  MaskExpectations e;
  for (const auto& [name, mask] : masks) e.shapes[name] = mask.shape();
  e.shapes["model.layers.0.unused.weight"] = {8, 8};  // expected but not sent: fine
  e.pattern = pattern;
  return e;
}

TEST(MultiTensorPayloadTest, RoundTripsInHeaderOrder) {
  for (MaskPattern pattern : {MaskPattern{}, MaskPattern{2, 4}}) {
    const auto masks = LayerOfMasks(pattern);
    for (size_t chunk : {size_t{1}, size_t{5}, kDefaultMaxChunkBytes}) {
      auto p = EncodeMasks(masks, pattern, chunk);
      ASSERT_TRUE(p.ok()) << p.status();
      ASSERT_EQ(p->header.tensors.size(), masks.size());
      EXPECT_EQ(p->header.raw_bytes, 5 + 3 + 7 + 1);
      for (size_t i = 0; i < masks.size(); ++i) {
        EXPECT_EQ(p->header.tensors[i].name, masks[i].first);
        EXPECT_EQ(p->header.tensors[i].declared_count, masks[i].second.CountOnes());
      }
      auto back = DecodeMasks(*p, ExpectAll(masks, pattern));
      ASSERT_TRUE(back.ok()) << back.status();
      ASSERT_EQ(back->size(), masks.size());
      for (size_t i = 0; i < masks.size(); ++i) EXPECT_EQ((*back)[i], masks[i].second) << i;
    }
  }
}

// The receiver decodes as chunks arrive: a tensor is handed out as soon as its raw layout is
// complete, long before the payload's last chunk, for raw and zstd payloads alike.
TEST(MultiTensorPayloadTest, HandsOutEachTensorOnceItsBytesArrived) {
  std::vector<std::pair<std::string, PackedMask>> masks;
  for (int i = 0; i < 6; ++i) {
    // Sparse masks compress, so the same test covers ZSTD_BITS; dense ones stay raw.
    masks.emplace_back(absl::StrCat("model.layers.0.t", i, ".weight"), RandomMask({1024, 512}, i < 3 ? 0.5 : 0.01, 40 + i));
  }
  for (bool compressible : {false, true}) {
    std::vector<std::pair<std::string, PackedMask>> sent;
    for (size_t i = 0; i < masks.size(); ++i) {
      if (((i >= 3) == compressible)) sent.push_back(masks[i]);
    }
    auto p = EncodeMasks(sent, {}, 500);
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_EQ(p->header.encoding, compressible ? PayloadEncoding::kZstdBits : PayloadEncoding::kRawBits);
    MaskExpectations expect = ExpectAll(sent, {});
    // zstd hands out whole blocks (at most 128 KiB of content): 3 tensors of 64 KiB span 2.
    expect.max_tensor_raw_bytes = 1024 * 512 / 8;  // one tensor: the whole payload is 3 times that
    auto a = MaskAssembler::Create(p->header, expect);
    ASSERT_TRUE(a.ok()) << a.status();
    std::vector<PackedMask> got;
    size_t first_out_at_chunk = 0;
    for (size_t c = 0; c < p->chunks.size(); ++c) {
      ASSERT_TRUE(a->AddChunk(p->chunks[c]).ok());
      for (PackedMask& m : a->TakeDecoded()) {
        if (got.empty()) first_out_at_chunk = c;
        got.push_back(std::move(m));
      }
    }
    auto rest = a->Finish();
    ASSERT_TRUE(rest.ok()) << rest.status();
    for (PackedMask& m : *rest) got.push_back(std::move(m));
    ASSERT_EQ(got.size(), sent.size());
    for (size_t i = 0; i < sent.size(); ++i) EXPECT_EQ(got[i], sent[i].second) << i;
    EXPECT_LT(first_out_at_chunk + 1, p->chunks.size()) << "the first tensor came out only at the end";
    expect.max_tensor_raw_bytes = 1024 * 512 / 8 - 1;
    EXPECT_EQ(MaskAssembler::Create(p->header, expect).status().code(), absl::StatusCode::kResourceExhausted);
  }
}

TEST(MultiTensorPayloadTest, RejectsUnexpectedRepeatedAndMiscountedTensors) {
  const auto masks = LayerOfMasks({});
  const MaskExpectations expect = ExpectAll(masks, {});
  const EncodedPayload good = *EncodeMasks(masks, {});

  EncodedPayload p = good;
  p.header.tensors[2].name = "model.layers.9.t2.weight";
  EXPECT_THAT(DecodeMasks(p, expect).status().message(),
              HasSubstr("tensor 'model.layers.9.t2.weight': is not expected here"));

  p = good;
  p.header.tensors[3].name = p.header.tensors[1].name;
  p.header.tensors[3].shape = p.header.tensors[1].shape;
  EXPECT_THAT(DecodeMasks(p, expect).status().message(), HasSubstr("appears twice in one payload"));

  p = good;
  p.header.tensors[1].declared_count += 1;  // the bits decode, but this tensor's count is wrong
  const absl::Status miscounted = DecodeMasks(p, expect).status();
  EXPECT_EQ(miscounted.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(miscounted.message(), HasSubstr("tensor 'model.layers.0.t1.weight': mask has"));

  p = good;
  p.header.tensors.pop_back();  // raw_bytes still counts the dropped tensor
  EXPECT_THAT(DecodeMasks(p, expect).status().message(), HasSubstr("raw_bytes is 16, expected 15"));

  p = good;
  p.header.tensors.clear();
  EXPECT_THAT(DecodeMasks(p, expect).status().message(), HasSubstr("covers 0 tensors"));

  EXPECT_FALSE(EncodeMasks({}, {}).ok());
  std::vector<std::pair<std::string, PackedMask>> twice = {masks[0], masks[0]};
  EXPECT_THAT(EncodeMasks(twice, {}).status().message(), HasSubstr("appears twice"));
}

TEST(MultiTensorPayloadTest, PaddingBetweenTensorsMustBeZero) {
  // t0 is [3, 12] = 36 bits: the last 4 bits of its fifth byte are padding, and the next
  // tensor starts at byte 5.
  const auto masks = LayerOfMasks({});
  EncodedPayload p = *EncodeMasks(masks, {}, 1 << 20);
  ASSERT_EQ(p.header.encoding, PayloadEncoding::kRawBits);
  p.chunks[0].data[4] = static_cast<char>(p.chunks[0].data[4] | 0x80);
  p.chunks[0].crc32c = crc32c::Value(p.chunks[0].data);
  const absl::Status s = DecodeMasks(p, ExpectAll(masks, {})).status();
  EXPECT_THAT(s.message(), HasSubstr("tensor 'model.layers.0.t0.weight'"));
  EXPECT_THAT(s.message(), HasSubstr("padding"));
}

}  // namespace
}  // namespace fedprllm
