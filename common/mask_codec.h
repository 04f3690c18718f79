// Mask wire codec: turns a PackedMask into a per-tensor header plus CRC32C-checked chunks
// (raw bits, or zstd where it pays) and reassembles them with every check of
// docs/mask_wire_format.md §6. Plain C++; the gRPC layer copies these fields to and from
// proto/fedprllm.proto's TensorHeader and PayloadData.
//
//   // Sender (client):
//   ASSIGN_OR_RETURN(EncodedPayload p, EncodeMask("model.layers.0.mlp.up_proj.weight", mask,
//                                                 MaskPattern{2, 4}));
//   Send(p.header); for (const PayloadChunk& c : p.chunks) Send(c);
//
//   // Receiver (server), for one tensor:
//   MaskExpectations expect;
//   expect.shape = job_shape_for(header.tensor_name);
//   expect.pattern = job_pattern;
//   ASSIGN_OR_RETURN(MaskAssembler a, MaskAssembler::Create(header, expect));
//   for each received chunk: RETURN_IF_ERROR(a.AddChunk(chunk));
//   ASSIGN_OR_RETURN(PackedMask mask, a.Finish());
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/packed_mask.h"

namespace fedprllm {

// What a payload is. Values are shared with the proto's PayloadKind. Reserved, not yet
// handled by this codec: 2 ACTIVATION_STATS, 3 SECAGG_SHARE, 4 DP_MASK, 5 WEIGHT_SCALE.
enum class PayloadKind : int32_t { kPruneMask = 1 };

// How the raw layout is turned into wire bytes. Values are shared with the proto's
// PayloadEncoding. Reserved for float payloads: 3 RAW_F32, 4 ZSTD_F32.
enum class PayloadEncoding : int32_t {
  kRawBits = 1,   // The packed bits as-is.
  kZstdBits = 2,  // zstd over the packed bits; only used when smaller than raw.
};

// Sparsity pattern. m == 0 (with n == 0): unstructured. Otherwise every group of m
// consecutive elements along the last dimension has exactly n pruned (1 <= n <= m <= 64).
struct MaskPattern {
  int n = 0;
  int m = 0;
  bool structured() const { return m != 0; }
  bool operator==(const MaskPattern& o) const { return n == o.n && m == o.m; }
  bool operator!=(const MaskPattern& o) const { return !(*this == o); }
};
// "unstructured" or "2:4".
std::string PatternToString(MaskPattern pattern);

// Per-tensor header, sent once before the tensor's chunks (spec §2).
struct TensorPayloadHeader {
  std::string tensor_name;
  std::vector<int64_t> shape;
  PayloadKind kind = PayloadKind::kPruneMask;
  MaskPattern pattern;
  int64_t declared_count = 0;  // Number of pruned (1) bits.
  PayloadEncoding encoding = PayloadEncoding::kRawBits;
  int64_t encoded_bytes = 0;  // Sum of all chunks' data sizes.
  int64_t raw_bytes = 0;      // ceil(numel / 8).
};

// One slice of the encoded bytes (spec §4).
struct PayloadChunk {
  int64_t chunk_index = 0;
  int64_t offset = 0;  // Byte offset of `data` within the encoded bytes.
  std::string data;
  uint32_t crc32c = 0;  // CRC32C of `data`.
  bool last = false;
};

struct EncodedPayload {
  TensorPayloadHeader header;
  std::vector<PayloadChunk> chunks;  // In order; at least one.

  // Upper bound, in bytes, of this payload's protobuf encoding (header plus chunks, with
  // their field tags and lengths; not the per-message session token and round).
  int64_t WireBytesUpperBound() const;
};

inline constexpr size_t kDefaultMaxChunkBytes = size_t{1} << 20;

// Checks that `pattern` is well formed for `mask`'s shape and, when structured, that every
// group of m consecutive elements along the last dimension has exactly n ones.
// `tensor_name` only labels error messages. Errors: INVALID_ARGUMENT.
absl::Status CheckMaskPattern(absl::string_view tensor_name, const PackedMask& mask,
                              MaskPattern pattern);

// Encodes `mask` for the wire: declared_count = mask.CountOnes(); zstd (level 3) is used
// only if strictly smaller than the raw bits; chunks hold at most `max_chunk_bytes` each.
// Fails (INVALID_ARGUMENT) on an empty name, a shape the spec forbids, a pattern the mask
// does not satisfy, or max_chunk_bytes == 0.
absl::StatusOr<EncodedPayload> EncodeMask(std::string tensor_name, const PackedMask& mask,
                                          MaskPattern pattern,
                                          size_t max_chunk_bytes = kDefaultMaxChunkBytes);

// What the receiver expects of one tensor, and the bounds it enforces.
struct MaskExpectations {
  // Shape the job declares for this tensor name. The header must match it exactly.
  std::vector<int64_t> shape;
  // The job's pattern. The header must match it exactly.
  MaskPattern pattern;
  // Largest raw layout accepted, in bytes. Default: 1 GiB (8.6e9 weights).
  int64_t max_raw_bytes = int64_t{1} << 30;
  // Largest chunk accepted, in bytes. Default: 1 MiB.
  int64_t max_chunk_bytes = static_cast<int64_t>(kDefaultMaxChunkBytes);
};

// Reassembles one tensor's payload from its header and chunks. Not thread-safe; one per
// tensor per upload. A failed Create() or AddChunk() changes nothing (a rejected chunk is
// not stored); the caller reports the error and drops the whole upload.
class MaskAssembler {
 public:
  // Validates `header` against `expect` (spec §6, checks 1-7). Errors: UNIMPLEMENTED for
  // an unhandled kind, RESOURCE_EXHAUSTED above max_raw_bytes, else INVALID_ARGUMENT.
  static absl::StatusOr<MaskAssembler> Create(TensorPayloadHeader header,
                                              const MaskExpectations& expect);

  // Validates and stores the next chunk (checks 8-13). Errors: DATA_LOSS on a CRC
  // mismatch, RESOURCE_EXHAUSTED above max_chunk_bytes, else INVALID_ARGUMENT.
  absl::Status AddChunk(const PayloadChunk& chunk);

  // True once the last chunk has been stored.
  bool complete() const { return complete_; }
  int64_t bytes_received() const { return static_cast<int64_t>(buffer_.size()); }
  const TensorPayloadHeader& header() const { return header_; }

  // Decodes and validates the whole payload (checks 14-18) and returns the mask. Once the
  // last chunk is stored it may be called once: it releases the buffered bytes, whatever
  // the result. Errors: INVALID_ARGUMENT (truncated, bad
  // zstd, size, padding, count or N:M), FAILED_PRECONDITION when called twice.
  absl::StatusOr<PackedMask> Finish();

 private:
  MaskAssembler(TensorPayloadHeader header, int64_t max_chunk_bytes)
      : header_(std::move(header)), max_chunk_bytes_(max_chunk_bytes) {}

  TensorPayloadHeader header_;
  int64_t max_chunk_bytes_;
  std::string buffer_;  // Encoded bytes received so far; at most header_.encoded_bytes.
  int64_t next_chunk_index_ = 0;
  bool complete_ = false;
  bool finished_ = false;
};

// Convenience: runs a MaskAssembler over a whole in-memory payload.
absl::StatusOr<PackedMask> DecodeMask(const EncodedPayload& payload,
                                      const MaskExpectations& expect);

}  // namespace fedprllm
