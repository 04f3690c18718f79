// The byte layout mask_codec_fuzz reads a payload from, and that fuzz_make_seeds writes
// real encoded payloads in. All integers little-endian; every field is optional in that a
// short input reads as zeros (fuzz/fuzz_support.h ByteReader).
//
//   u8  flags     bit0: the expected kind is WEIGHT_SCALE (else PRUNE_MASK)
//                 bit1: recompute every chunk's crc32c from its data
//                 bit2: recompute encoded_bytes, raw_bytes, chunk_index, offset and last
//                 bit3: the receiver expects pattern 2:4 (else unstructured)
//                 bit4: the receiver's max_chunk_bytes is 64 (else 1 MiB)
//   i32 kind, i32 encoding, u8 pattern n, u8 pattern m
//   i64 encoded_bytes, i64 raw_bytes
//   u8  tensor count (at most kMaxFuzzTensors read), then per tensor:
//       u8 name index into kFuzzTensorNames (out of range: a name the receiver does not know),
//       u8 rank (at most 4 read), rank x i64 dims, i64 declared_count
//   u8  chunk count (at most kMaxFuzzChunks read), then per chunk:
//       i64 chunk_index, i64 offset, u32 crc32c, u8 last, u32 length, length data bytes
//
// Bits 1 and 2 let the fuzzer reach the decoders behind the checksum and size checks; a
// seed written from a real payload has them clear and every field as sent.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/crc32c.h"
#include "common/mask_codec.h"
#include "fuzz/fuzz_support.h"

namespace fedprllm::fuzz {

inline constexpr size_t kMaxFuzzTensors = 8;
inline constexpr size_t kMaxFuzzChunks = 32;

// The tensors the fuzzed receiver knows, with their shapes (kFuzzTensorShapes[i]).
inline const std::array<const char*, 4> kFuzzTensorNames = {
    "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
    "model.layers.0.mlp.down_proj.weight", "lm_head.weight"};
inline const std::array<std::vector<int64_t>, 4> kFuzzTensorShapes = {
    std::vector<int64_t>{8, 16}, std::vector<int64_t>{4, 16}, std::vector<int64_t>{16, 12},
    std::vector<int64_t>{3, 5}};

enum PayloadBytesFlags : uint8_t {
  kExpectWeightScale = 1 << 0,
  kFixCrc = 1 << 1,
  kFixSizes = 1 << 2,
  kExpectTwoFour = 1 << 3,
  kSmallChunks = 1 << 4,
};

struct FuzzedPayload {
  uint8_t flags = 0;
  EncodedPayload payload;
};

// Reads a payload in the layout above; applies the kFixCrc and kFixSizes repairs.
inline FuzzedPayload ReadPayloadBytes(ByteReader& in) {
  FuzzedPayload out;
  out.flags = in.U8();
  PayloadHeader& h = out.payload.header;
  h.kind = static_cast<PayloadKind>(static_cast<int32_t>(in.U32()));
  h.encoding = static_cast<PayloadEncoding>(static_cast<int32_t>(in.U32()));
  h.pattern.n = in.U8();
  h.pattern.m = in.U8();
  h.encoded_bytes = in.I64();
  h.raw_bytes = in.I64();
  const size_t tensors = std::min<size_t>(in.U8(), kMaxFuzzTensors);
  int64_t raw_bytes = 0;
  for (size_t i = 0; i < tensors; ++i) {
    PayloadTensor t;
    const uint8_t name = in.U8();
    t.name = name < kFuzzTensorNames.size() ? kFuzzTensorNames[name] : "unknown." + std::to_string(name);
    const size_t rank = std::min<size_t>(in.U8(), 4);
    int64_t numel = 1;
    for (size_t d = 0; d < rank; ++d) {
      t.shape.push_back(in.I64());
      if (numel >= 0 && (t.shape.back() < 0 || __builtin_mul_overflow(numel, t.shape.back(), &numel))) numel = -1;
    }
    t.declared_count = in.I64();
    // The repair's own arithmetic must not overflow on fuzzed shapes: saturate instead.
    int64_t tensor_bytes = -1;
    if (numel >= 0) {
      if (h.kind != PayloadKind::kWeightScale) {
        tensor_bytes = numel / 8 + (numel % 8 != 0);
      } else if (__builtin_mul_overflow(numel, int64_t{4}, &tensor_bytes)) {
        tensor_bytes = -1;
      }
    }
    if (tensor_bytes < 0 || __builtin_add_overflow(raw_bytes, tensor_bytes, &raw_bytes)) raw_bytes = INT64_MAX;
    h.tensors.push_back(std::move(t));
  }
  const size_t chunks = std::min<size_t>(in.U8(), kMaxFuzzChunks);
  int64_t offset = 0;
  for (size_t i = 0; i < chunks; ++i) {
    PayloadChunk c;
    c.chunk_index = in.I64();
    c.offset = in.I64();
    c.crc32c = in.U32();
    c.last = in.U8() != 0;
    c.data = in.Bytes(in.U32());
    if (out.flags & kFixCrc) c.crc32c = crc32c::Value(c.data);
    if (out.flags & kFixSizes) {
      c.chunk_index = static_cast<int64_t>(i);
      c.offset = offset;
      c.last = i + 1 == chunks;
    }
    offset += static_cast<int64_t>(c.data.size());
    out.payload.chunks.push_back(std::move(c));
  }
  if (out.flags & kFixSizes) {
    h.encoded_bytes = offset;
    h.raw_bytes = raw_bytes;
  }
  return out;
}

// Writes `payload` in the layout above with `flags`, every field exactly as given.
inline std::string WritePayloadBytes(const EncodedPayload& payload, uint8_t flags) {
  std::string out;
  auto put = [&out](uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  };
  const PayloadHeader& h = payload.header;
  put(flags, 1);
  put(static_cast<uint32_t>(h.kind), 4);
  put(static_cast<uint32_t>(h.encoding), 4);
  put(static_cast<uint8_t>(h.pattern.n), 1);
  put(static_cast<uint8_t>(h.pattern.m), 1);
  put(static_cast<uint64_t>(h.encoded_bytes), 8);
  put(static_cast<uint64_t>(h.raw_bytes), 8);
  put(h.tensors.size(), 1);
  for (const PayloadTensor& t : h.tensors) {
    size_t name = kFuzzTensorNames.size();
    for (size_t i = 0; i < kFuzzTensorNames.size(); ++i) {
      if (t.name == kFuzzTensorNames[i]) name = i;
    }
    put(name, 1);
    put(t.shape.size(), 1);
    for (int64_t d : t.shape) put(static_cast<uint64_t>(d), 8);
    put(static_cast<uint64_t>(t.declared_count), 8);
  }
  put(payload.chunks.size(), 1);
  for (const PayloadChunk& c : payload.chunks) {
    put(static_cast<uint64_t>(c.chunk_index), 8);
    put(static_cast<uint64_t>(c.offset), 8);
    put(c.crc32c, 4);
    put(c.last ? 1 : 0, 1);
    put(c.data.size(), 4);
    out += c.data;
  }
  return out;
}

}  // namespace fedprllm::fuzz
