// Mask wire codec: turns the packed masks of one or more tensors into one payload (a
// header naming every tensor with its declared count, then CRC32C-checked chunks of raw bits,
// or of zstd where it pays) and reassembles them with every check of
// docs/mask_wire_format.md §6. Plain C++; the gRPC layer copies these fields to and from
// proto/fedprllm.proto's TensorHeader and PayloadData.
//
//   // Sender (client): all masks of a round in one payload.
//   ASSIGN_OR_RETURN(EncodedPayload p, EncodeMasks(named_masks, MaskPattern{2, 4}));
//   Send(p.header); for (const PayloadChunk& c : p.chunks) Send(c);
//
//   // Receiver (server):
//   MaskExpectations expect;
//   expect.shapes = round_tensor_shapes;  // name -> shape of every tensor it accepts
//   expect.pattern = job_pattern;
//   ASSIGN_OR_RETURN(MaskAssembler a, MaskAssembler::Create(header, expect));
//   for each received chunk: {
//     RETURN_IF_ERROR(a.AddChunk(chunk));
//     for (PackedMask& m : a.TakeDecoded()) Store(m);  // optional: tensors checked so far
//   }
//   ASSIGN_OR_RETURN(std::vector<PackedMask> rest, a.Finish());  // the ones not yet taken
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/packed_mask.h"

namespace fedprllm {

// What a payload is. Values are shared with the proto's PayloadKind. Reserved, not yet
// handled by this codec: 2 ACTIVATION_STATS, 3 SECAGG_SHARE, 4 DP_MASK.
enum class PayloadKind : int32_t {
  kPruneMask = 1,    // Packed 0/1 bits (MaskAssembler).
  kWeightScale = 5,  // float32 per weight, server to client (Float32Assembler).
};

// How the raw layout is turned into wire bytes. Values are shared with the proto's
// PayloadEncoding. Reserved for float payloads: 3 RAW_F32, 4 ZSTD_F32.
enum class PayloadEncoding : int32_t {
  kRawBits = 1,   // The packed bits as-is.
  kZstdBits = 2,  // zstd over the packed bits; only used when smaller than raw.
  kRawF32 = 3,    // Little-endian float32 values.
  kZstdF32 = 4,   // zstd over the RAW_F32 bytes; only used when smaller than raw.
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

// One tensor of a payload (spec §2).
struct PayloadTensor {
  std::string name;
  std::vector<int64_t> shape;
  int64_t declared_count = 0;  // Masks: pruned (1) bits. Float32: values (= numel).
};

// Payload header, sent once before the payload's chunks (spec §2).
struct PayloadHeader {
  PayloadKind kind = PayloadKind::kPruneMask;
  // The tensors covered, 1..kMaxPayloadTensors; their raw layouts are concatenated in this
  // order. Float32 payloads cover exactly one tensor.
  std::vector<PayloadTensor> tensors;
  MaskPattern pattern;
  PayloadEncoding encoding = PayloadEncoding::kRawBits;
  int64_t encoded_bytes = 0;  // Sum of all chunks' data sizes.
  int64_t raw_bytes = 0;      // Sum of the tensors' raw layouts (ceil(numel / 8) for masks).

  // "tensor 'first name': " or "tensor 'first name' (and N more): ", for error messages.
  std::string Label() const;
};

inline constexpr size_t kMaxPayloadTensors = 4096;

// One slice of the encoded bytes (spec §4).
struct PayloadChunk {
  int64_t chunk_index = 0;
  int64_t offset = 0;  // Byte offset of `data` within the encoded bytes.
  std::string data;
  uint32_t crc32c = 0;  // CRC32C of `data`.
  bool last = false;
};

struct EncodedPayload {
  PayloadHeader header;
  std::vector<PayloadChunk> chunks;  // In order; at least one.

  // Upper bound, in bytes, of this payload's protobuf encoding (header plus chunks, with
  // their field tags and lengths; tensors named by index, as on the wire; not the
  // per-message session token and round).
  int64_t WireBytesUpperBound() const;
};

inline constexpr size_t kDefaultMaxChunkBytes = size_t{1} << 20;

// Checks that `pattern` is well formed for `mask`'s shape and, when structured, that every
// group of m consecutive elements along the last dimension has exactly n ones.
// `tensor_name` only labels error messages. Errors: INVALID_ARGUMENT.
absl::Status CheckMaskPattern(absl::string_view tensor_name, const PackedMask& mask,
                              MaskPattern pattern);

// Encodes the masks of one or more tensors as one payload: declared_count = CountOnes() per
// tensor; zstd (level 3) over the concatenated raw layouts only if strictly smaller; chunks
// of at most `max_chunk_bytes`. Fails (INVALID_ARGUMENT) on no or too many tensors, an
// empty or repeated name, a shape the spec forbids, a pattern a mask does not satisfy, or
// max_chunk_bytes == 0.
absl::StatusOr<EncodedPayload> EncodeMasks(absl::Span<const std::pair<std::string, PackedMask>> masks,
                                           MaskPattern pattern,
                                           size_t max_chunk_bytes = kDefaultMaxChunkBytes);
// One tensor's mask as its own payload.
absl::StatusOr<EncodedPayload> EncodeMask(std::string tensor_name, const PackedMask& mask,
                                          MaskPattern pattern,
                                          size_t max_chunk_bytes = kDefaultMaxChunkBytes);

// What the receiver expects of a mask payload, and the bounds it enforces.
struct MaskExpectations {
  // Every tensor the receiver accepts, with the job's shape for it. Each header tensor must
  // be one of these, at most once per payload, with exactly this shape.
  std::map<std::string, std::vector<int64_t>> shapes;
  // The job's pattern. The header must match it exactly.
  MaskPattern pattern;
  // Largest raw layout of one tensor, in bytes. Default: 1 GiB (8.6e9 weights). A payload's
  // total has no limit: the receiver holds one tensor at a time.
  int64_t max_tensor_raw_bytes = int64_t{1} << 30;
  // Largest chunk accepted, in bytes. Default: 1 MiB.
  int64_t max_chunk_bytes = static_cast<int64_t>(kDefaultMaxChunkBytes);
};

namespace internal {
// What every assembler shares: the validated header and the encoded bytes of the chunks
// accepted so far. A rejected chunk changes nothing.
class PayloadReceiver {
 public:
  // `keep_bytes`: whether AddChunk stores the chunks' bytes for TakeRawLayout, or only checks
  // them (the caller decodes each chunk as it arrives).
  PayloadReceiver(PayloadHeader header, int64_t max_chunk_bytes, bool keep_bytes = true);
  // Checks 8-13, then stores the chunk.
  absl::Status AddChunk(const PayloadChunk& chunk);
  bool complete() const { return complete_; }
  // Check 14: the last chunk was stored.
  absl::Status CheckComplete() const;
  int64_t bytes_received() const { return received_; }
  const PayloadHeader& header() const { return header_; }
  // Checks 14 and 15: not taken before, the last chunk stored. Releases the buffered bytes
  // and returns the raw layout: the bytes themselves, or (zstd) their decoding into exactly
  // header().raw_bytes, with `encoding_name` in error messages.
  absl::StatusOr<std::string> TakeRawLayout(bool zstd, absl::string_view encoding_name);

 private:
  PayloadHeader header_;
  int64_t max_chunk_bytes_;
  bool keep_bytes_;
  std::string buffer_;  // Encoded bytes received so far (keep_bytes_); at most encoded_bytes.
  int64_t received_ = 0;
  int64_t next_chunk_index_ = 0;
  bool complete_ = false;
  bool finished_ = false;
};
}  // namespace internal

// Reassembles one mask payload from its header and chunks, decoding each chunk as it
// arrives: memory holds the tensor being filled and the checked masks not yet taken, never
// the payload's encoded bytes. Not thread-safe; one per payload. A failed Create() changes
// nothing; after a failed AddChunk() the assembler refuses every later call, and the caller
// reports the error and drops the whole upload.
class MaskAssembler {
 public:
  // Validates `header` against `expect` (spec §6, checks 1-7). Errors: UNIMPLEMENTED for
  // an unhandled kind, RESOURCE_EXHAUSTED for a tensor above max_tensor_raw_bytes, else
  // INVALID_ARGUMENT.
  static absl::StatusOr<MaskAssembler> Create(PayloadHeader header,
                                              const MaskExpectations& expect);
  MaskAssembler(MaskAssembler&&) noexcept;
  MaskAssembler& operator=(MaskAssembler&&) noexcept;
  ~MaskAssembler();

  // Validates the next chunk (checks 8-13) and decodes it; every tensor whose raw layout it
  // completes is checked (16-18) and queued for TakeDecoded(). Errors: DATA_LOSS on a CRC
  // mismatch, RESOURCE_EXHAUSTED above max_chunk_bytes, else INVALID_ARGUMENT (also for
  // zstd data that is corrupt, would exceed raw_bytes or follows the frame).
  absl::Status AddChunk(const PayloadChunk& chunk);

  // True once the last chunk has been stored.
  bool complete() const { return receiver_.complete(); }
  int64_t bytes_received() const { return receiver_.bytes_received(); }
  const PayloadHeader& header() const { return receiver_.header(); }

  // The masks checked so far and not yet taken, in header order (tensor i of the header
  // is the i-th mask taken over all calls and Finish()).
  std::vector<PackedMask> TakeDecoded();

  // Checks 14 and 15 (every chunk received; the zstd frame ended exactly at raw_bytes) and
  // returns the masks not yet taken. May be called once. Errors: INVALID_ARGUMENT
  // (truncated, short zstd frame), FAILED_PRECONDITION when called twice or after a failed
  // AddChunk.
  absl::StatusOr<std::vector<PackedMask>> Finish();

 private:
  struct Decoder;
  MaskAssembler(PayloadHeader header, int64_t max_chunk_bytes);
  absl::Status Decode(absl::string_view data);
  absl::Status DecodeZstd(absl::string_view data);
  // Checks the filled tensor (16-18), queues it and starts the next one.
  absl::Status CompleteTensor();

  internal::PayloadReceiver receiver_;
  std::unique_ptr<Decoder> decoder_;
};

// Convenience: runs a MaskAssembler over a whole in-memory payload.
absl::StatusOr<std::vector<PackedMask>> DecodeMasks(const EncodedPayload& payload,
                                                    const MaskExpectations& expect);

// ---- float32 payloads (WEIGHT_SCALE; docs/mask_wire_format.md §7 table) ------------------------

// Encodes `values` (row-major over `shape`, every value finite) as a one-tensor float32
// payload of `kind`: declared_count = value count, raw_bytes = 4 * count, zstd (level 3)
// only where it is strictly smaller. Fails (INVALID_ARGUMENT) on a bad name or shape, a count
// that differs from the shape's numel, a non-finite value, or max_chunk_bytes == 0.
absl::StatusOr<EncodedPayload> EncodeFloat32(std::string tensor_name, std::vector<int64_t> shape,
                                             absl::Span<const float> values,
                                             PayloadKind kind = PayloadKind::kWeightScale,
                                             size_t max_chunk_bytes = kDefaultMaxChunkBytes);

// What the receiver of a float32 payload expects.
struct Float32Expectations {
  PayloadKind kind = PayloadKind::kWeightScale;
  std::vector<int64_t> shape;  // The header must match it exactly.
  int64_t max_raw_bytes = int64_t{1} << 32;
  int64_t max_chunk_bytes = static_cast<int64_t>(kDefaultMaxChunkBytes);
};

// Reassembles one float32 payload; same contract as MaskAssembler (a failed call changes
// nothing). Checks: kind, exactly one tensor, its name, shape == expected, pattern
// unstructured, raw_bytes == 4 * numel, declared_count == numel, encoding RAW_F32
// (encoded == raw) or ZSTD_F32 (0 < encoded < raw); chunks as checks 8-13; on Finish exact
// decompression into raw_bytes and every value finite.
class Float32Assembler {
 public:
  static absl::StatusOr<Float32Assembler> Create(PayloadHeader header,
                                                 const Float32Expectations& expect);
  absl::Status AddChunk(const PayloadChunk& chunk);
  bool complete() const { return receiver_.complete(); }
  const PayloadHeader& header() const { return receiver_.header(); }
  // Row-major values, header().tensors[0].declared_count of them.
  absl::StatusOr<std::vector<float>> Finish();

 private:
  Float32Assembler(PayloadHeader header, int64_t max_chunk_bytes) : receiver_(std::move(header), max_chunk_bytes) {}

  internal::PayloadReceiver receiver_;
};

// Convenience: runs a Float32Assembler over a whole in-memory payload.
absl::StatusOr<std::vector<float>> DecodeFloat32(const EncodedPayload& payload,
                                                 const Float32Expectations& expect);

}  // namespace fedprllm
