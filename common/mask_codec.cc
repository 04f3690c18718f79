// Mask wire codec implementation: docs/mask_wire_format.md is the contract; the numbered
// checks below refer to its §6.
#include "common/mask_codec.h"

#include <zstd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/crc32c.h"
#include "common/status_macros.h"

namespace fedprllm {
namespace {

constexpr size_t kMaxNameBytes = 256;
constexpr size_t kMaxRank = 8;
constexpr int64_t kMaxNumel = int64_t{1} << 40;
constexpr int kMaxGroup = 64;
constexpr int kZstdLevel = 3;

// "tensor 'name': ", with an over-long (hostile) name cut short.
std::string Label(absl::string_view name) {
  if (name.size() > 80) return absl::StrCat("tensor '", name.substr(0, 80), "...': ");
  return absl::StrCat("tensor '", name, "': ");
}

absl::Status CheckName(absl::string_view name) {
  if (name.empty() || name.size() > kMaxNameBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(Label(name), "name is ", name.size(), " bytes, expected 1..", kMaxNameBytes));
  }
  return absl::OkStatus();
}

// Spec §2: rank 1..8, every dimension >= 1, numel <= 2^40. Returns numel.
absl::StatusOr<int64_t> CheckShape(absl::string_view name, const std::vector<int64_t>& shape) {
  if (shape.empty() || shape.size() > kMaxRank) {
    return absl::InvalidArgumentError(
        absl::StrCat(Label(name), "shape has rank ", shape.size(), ", expected 1..", kMaxRank));
  }
  int64_t numel = 1;
  for (int64_t d : shape) {
    if (d < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(Label(name), "shape ", ShapeToString(shape), " has a dimension < 1"));
    }
    if (numel > kMaxNumel / d) {
      return absl::InvalidArgumentError(absl::StrCat(Label(name), "shape ", ShapeToString(shape),
                                                     " has more than 2^40 elements"));
    }
    numel *= d;
  }
  return numel;
}

// Spec §2: the pattern is well formed and the last dimension is a multiple of m.
absl::Status CheckPatternForShape(absl::string_view name, MaskPattern p,
                                  const std::vector<int64_t>& shape) {
  if (!p.structured()) {
    if (p.n != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(Label(name), "pattern has n=", p.n, " but m=0 (unstructured)"));
    }
    return absl::OkStatus();
  }
  if (p.m < 1 || p.m > kMaxGroup || p.n < 1 || p.n > p.m) {
    return absl::InvalidArgumentError(
        absl::StrCat(Label(name), "pattern ", PatternToString(p),
                     " is invalid, expected 1 <= n <= m <= ", kMaxGroup));
  }
  if (shape.empty() || shape.back() % p.m != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(Label(name), "last dimension of shape ", ShapeToString(shape),
                     " is not a multiple of m=", p.m, " for pattern ", PatternToString(p)));
  }
  return absl::OkStatus();
}

// Encoding choice shared by every kind: zstd if strictly smaller, else raw.
std::string CompressIfItPays(const void* raw, size_t size, bool* compressed) {
  std::string encoded(ZSTD_compressBound(size), '\0');
  const size_t zsize = ZSTD_compress(encoded.data(), encoded.size(), raw, size, kZstdLevel);
  if (!ZSTD_isError(zsize) && zsize < size) {
    encoded.resize(zsize);
    *compressed = true;
  } else {
    encoded.assign(static_cast<const char*>(raw), size);
    *compressed = false;
  }
  return encoded;
}

void CutIntoChunks(const std::string& encoded, size_t max_chunk_bytes, EncodedPayload* out) {
  for (size_t offset = 0; offset < encoded.size(); offset += max_chunk_bytes) {
    PayloadChunk c;
    c.chunk_index = static_cast<int64_t>(out->chunks.size());
    c.offset = static_cast<int64_t>(offset);
    c.data = encoded.substr(offset, max_chunk_bytes);
    c.crc32c = crc32c::Value(c.data);
    c.last = offset + c.data.size() == encoded.size();
    out->chunks.push_back(std::move(c));
  }
}

}  // namespace

std::string PatternToString(MaskPattern pattern) {
  if (!pattern.structured() && pattern.n == 0) return "unstructured";
  return absl::StrCat(pattern.n, ":", pattern.m);
}

std::string PayloadHeader::Label() const {
  if (tensors.empty()) return "payload with no tensors: ";
  const std::string first = fedprllm::Label(tensors.front().name);
  if (tensors.size() == 1) return first;
  return absl::StrCat(first.substr(0, first.size() - 2), " (and ", tensors.size() - 1, " more): ");
}

int64_t EncodedPayload::WireBytesUpperBound() const {
  // Per field: 1 tag byte + up to 10 varint bytes; each submessage adds a tag and length.
  constexpr int64_t kField = 11;
  int64_t total = kField + 3 * kField + 3 * kField;  // header submessage, pattern, kind/encoding/sizes
  total += 2 * kField + static_cast<int64_t>(header.tensors.size()) * (5 + 10);  // packed indices, counts
  for (const PayloadChunk& c : chunks) {
    total += kField + 2 * kField + kField + static_cast<int64_t>(c.data.size()) + 5 + 2;
  }
  return total;
}

absl::Status CheckMaskPattern(absl::string_view tensor_name, const PackedMask& mask,
                              MaskPattern pattern) {
  RETURN_IF_ERROR(CheckPatternForShape(tensor_name, pattern, mask.shape()));
  if (!pattern.structured()) return absl::OkStatus();
  // Rows are multiples of m long, so groups never straddle rows: group g covers flattened
  // elements [g*m, g*m + m).
  const int64_t m = pattern.m, numel = mask.numel(), row_len = mask.shape().back();
  const int64_t groups = numel / m;
  const uint8_t* bytes = mask.bytes().data();
  // Group g's count; popcounts over whole bytes or aligned bit fields where m allows (m of
  // 1, 2, 4, 8 or a multiple of 8), bit by bit otherwise.
  auto count_of = [&](int64_t g) -> int {
    const int64_t start = g * m;
    if (8 % m == 0) return __builtin_popcount((bytes[start >> 3] >> (start & 7)) & ((1u << m) - 1u));
    if (m % 8 == 0) {
      int count = 0;
      for (int64_t b = start >> 3; b < (start + m) >> 3; ++b) count += __builtin_popcount(bytes[b]);
      return count;
    }
    int count = 0;
    for (int64_t i = start; i < start + m; ++i) count += mask.Get(i);
    return count;
  };
  for (int64_t g = 0; g < groups; ++g) {
    const int count = count_of(g);
    if (count != pattern.n) {
      const int64_t start = g * m;
      return absl::InvalidArgumentError(absl::StrCat(
          Label(tensor_name), "pattern ", PatternToString(pattern), " violated in row ",
          start / row_len, ", group ", (start % row_len) / m, " (flattened elements [", start, ", ",
          start + m, ")): ", count, " pruned, expected exactly ", pattern.n));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<EncodedPayload> EncodeMasks(absl::Span<const std::pair<std::string, PackedMask>> masks,
                                           MaskPattern pattern, size_t max_chunk_bytes) {
  if (masks.empty() || masks.size() > kMaxPayloadTensors) {
    return absl::InvalidArgumentError(
        absl::StrCat("a payload covers 1..", kMaxPayloadTensors, " tensors, got ", masks.size()));
  }
  if (max_chunk_bytes == 0) return absl::InvalidArgumentError("max_chunk_bytes must be >= 1");
  EncodedPayload out;
  PayloadHeader& h = out.header;
  h.kind = PayloadKind::kPruneMask;
  h.pattern = pattern;
  std::set<absl::string_view> seen;
  std::string raw;
  for (const auto& [name, mask] : masks) {
    RETURN_IF_ERROR(CheckName(name));
    if (!seen.insert(name).second) return absl::InvalidArgumentError(Label(name) + "appears twice in one payload");
    RETURN_IF_ERROR(CheckShape(name, mask.shape()).status());
    RETURN_IF_ERROR(CheckMaskPattern(name, mask, pattern));
    h.tensors.push_back({name, mask.shape(), mask.CountOnes()});
    raw.append(mask.bytes().begin(), mask.bytes().end());
  }
  h.raw_bytes = static_cast<int64_t>(raw.size());
  bool compressed = false;
  const std::string encoded = CompressIfItPays(raw.data(), raw.size(), &compressed);
  h.encoding = compressed ? PayloadEncoding::kZstdBits : PayloadEncoding::kRawBits;
  h.encoded_bytes = static_cast<int64_t>(encoded.size());
  CutIntoChunks(encoded, max_chunk_bytes, &out);
  return out;
}

absl::StatusOr<EncodedPayload> EncodeMask(std::string tensor_name, const PackedMask& mask,
                                          MaskPattern pattern, size_t max_chunk_bytes) {
  const std::pair<std::string, PackedMask> one[] = {{std::move(tensor_name), mask}};
  return EncodeMasks(one, pattern, max_chunk_bytes);
}

absl::StatusOr<MaskAssembler> MaskAssembler::Create(PayloadHeader header,
                                                    const MaskExpectations& expect) {
  // 1. Kind.
  if (header.kind != PayloadKind::kPruneMask) {
    return absl::UnimplementedError(absl::StrCat(header.Label(), "payload kind ",
                                                 static_cast<int32_t>(header.kind),
                                                 " is not handled, expected PRUNE_MASK (1)"));
  }
  if (header.tensors.empty() || header.tensors.size() > kMaxPayloadTensors) {
    return absl::InvalidArgumentError(absl::StrCat("payload covers ", header.tensors.size(),
                                                   " tensors, expected 1..", kMaxPayloadTensors));
  }
  // 4. Pattern against the job (its fit to each shape is checked per tensor below).
  if (header.pattern != expect.pattern) {
    return absl::InvalidArgumentError(
        absl::StrCat(header.Label(), "pattern ", PatternToString(header.pattern),
                     " does not match the job's pattern ", PatternToString(expect.pattern)));
  }
  int64_t raw_bytes = 0;
  std::set<absl::string_view> seen;
  for (const PayloadTensor& t : header.tensors) {
    const absl::string_view name = t.name;
    // 2. Name: one the receiver expects, once.
    RETURN_IF_ERROR(CheckName(name));
    auto expected = expect.shapes.find(t.name);
    if (expected == expect.shapes.end()) {
      return absl::InvalidArgumentError(Label(name) + "is not expected here");
    }
    if (!seen.insert(name).second) {
      return absl::InvalidArgumentError(Label(name) + "appears twice in one payload");
    }
    // 3. Shape, against the spec and the job.
    ASSIGN_OR_RETURN(const int64_t numel, CheckShape(name, t.shape));
    if (t.shape != expected->second) {
      return absl::InvalidArgumentError(
          absl::StrCat(Label(name), "shape ", ShapeToString(t.shape),
                       " does not match the job's shape ", ShapeToString(expected->second)));
    }
    RETURN_IF_ERROR(CheckPatternForShape(name, header.pattern, t.shape));
    // 6. Declared count.
    if (t.declared_count < 0 || t.declared_count > numel) {
      return absl::InvalidArgumentError(absl::StrCat(
          Label(name), "declared_count ", t.declared_count, " is outside [0, ", numel, "]"));
    }
    if (header.pattern.structured()) {
      const int64_t expected_count = numel / header.pattern.m * header.pattern.n;
      if (t.declared_count != expected_count) {
        return absl::InvalidArgumentError(absl::StrCat(
            Label(name), "declared_count ", t.declared_count, " is impossible for pattern ",
            PatternToString(header.pattern), ", expected ", expected_count));
      }
    }
    // 5. The receiver's bound on one tensor (the memory it holds while decoding).
    if ((numel + 7) / 8 > expect.max_tensor_raw_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(Label(name), "mask needs ", (numel + 7) / 8,
                                                       " bytes, above the limit of ", expect.max_tensor_raw_bytes,
                                                       " per tensor"));
    }
    raw_bytes += (numel + 7) / 8;
  }
  // 5. Raw size.
  if (header.raw_bytes != raw_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(header.Label(), "raw_bytes is ", header.raw_bytes,
                                                   ", expected ", raw_bytes, " for its tensors' shapes"));
  }
  // 7. Encoding and encoded size.
  switch (header.encoding) {
    case PayloadEncoding::kRawBits:
      if (header.encoded_bytes != raw_bytes) {
        return absl::InvalidArgumentError(absl::StrCat(header.Label(), "RAW_BITS encoded_bytes is ",
                                                       header.encoded_bytes, ", expected ", raw_bytes));
      }
      break;
    case PayloadEncoding::kZstdBits:
      if (header.encoded_bytes < 1 || header.encoded_bytes >= raw_bytes) {
        return absl::InvalidArgumentError(absl::StrCat(
            header.Label(), "ZSTD_BITS encoded_bytes is ", header.encoded_bytes, ", expected 1..",
            raw_bytes - 1, " (zstd is only sent when smaller than raw)"));
      }
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(header.Label(), "unknown encoding ", static_cast<int32_t>(header.encoding)));
  }
  return MaskAssembler(std::move(header), expect.max_chunk_bytes);
}

namespace {

// Check 15: `encoded` is exactly one zstd frame that decompresses to exactly raw_bytes.
absl::Status ZstdDecodeExact(const std::string& label, const std::string& encoded,
                             size_t raw_bytes, void* out) {
  const unsigned long long declared = ZSTD_getFrameContentSize(encoded.data(), encoded.size());
  if (declared == ZSTD_CONTENTSIZE_ERROR) {
    return absl::InvalidArgumentError(label + "zstd payload is not a zstd frame");
  }
  const size_t frame = ZSTD_findFrameCompressedSize(encoded.data(), encoded.size());
  if (ZSTD_isError(frame) || frame != encoded.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        label, "zstd payload of ", encoded.size(), " bytes is not exactly one zstd frame",
        ZSTD_isError(frame) ? "" : absl::StrCat(" (frame ends at byte ", frame, ")")));
  }
  if (declared != ZSTD_CONTENTSIZE_UNKNOWN && declared != raw_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(label, "zstd frame declares ", declared,
                                                   " bytes of content, expected raw_bytes ",
                                                   raw_bytes));
  }
  // The output buffer is the bound: a frame producing more fails with dstSize_tooSmall.
  const size_t n = ZSTD_decompress(out, raw_bytes, encoded.data(), encoded.size());
  if (ZSTD_isError(n)) {
    return absl::InvalidArgumentError(
        absl::StrCat(label, "zstd decompression failed: ", ZSTD_getErrorName(n),
                     " (output limited to raw_bytes ", raw_bytes, ")"));
  }
  if (n != raw_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(label, "zstd decompressed to ", n,
                                                   " bytes, expected raw_bytes ", raw_bytes));
  }
  return absl::OkStatus();
}

}  // namespace

namespace internal {

PayloadReceiver::PayloadReceiver(PayloadHeader header, int64_t max_chunk_bytes, bool keep_bytes)
    : header_(std::move(header)), max_chunk_bytes_(max_chunk_bytes), keep_bytes_(keep_bytes) {
  if (keep_bytes_) buffer_.reserve(static_cast<size_t>(header_.encoded_bytes));
}

absl::Status PayloadReceiver::AddChunk(const PayloadChunk& chunk) {
  const std::string label = absl::StrCat(header_.Label(), "chunk ", chunk.chunk_index, ": ");
  const int64_t received = received_;
  const int64_t size = static_cast<int64_t>(chunk.data.size());
  // 8. Nothing after the last chunk.
  if (complete_ || finished_) {
    return absl::InvalidArgumentError(label + "arrives after the last chunk");
  }
  // 9. Order.
  if (chunk.chunk_index != next_chunk_index_) {
    return absl::InvalidArgumentError(
        absl::StrCat(label, "out of order, expected chunk ", next_chunk_index_));
  }
  // 10. Offset.
  if (chunk.offset != received) {
    return absl::InvalidArgumentError(
        absl::StrCat(label, "offset is ", chunk.offset, ", expected ", received));
  }
  // 11. Size.
  if (size < 1) return absl::InvalidArgumentError(label + "is empty");
  if (size > max_chunk_bytes_) {
    return absl::ResourceExhaustedError(
        absl::StrCat(label, "is ", size, " bytes, above the limit of ", max_chunk_bytes_));
  }
  if (size > header_.encoded_bytes - received) {
    return absl::InvalidArgumentError(absl::StrCat(
        label, "ends at byte ", received + size, ", beyond encoded_bytes ", header_.encoded_bytes));
  }
  // 12. Checksum.
  const uint32_t crc = crc32c::Value(chunk.data);
  if (crc != chunk.crc32c) {
    return absl::DataLossError(absl::StrFormat("%scrc32c is 0x%08x, computed 0x%08x over %d bytes",
                                               label, chunk.crc32c, crc, size));
  }
  // 13. Last flag.
  const bool ends = received + size == header_.encoded_bytes;
  if (chunk.last != ends) {
    return absl::InvalidArgumentError(absl::StrCat(
        label,
        chunk.last ? "is marked last but ends at byte " : "is not marked last but ends at byte ",
        received + size, " of ", header_.encoded_bytes));
  }
  if (keep_bytes_) buffer_.append(chunk.data);
  received_ += size;
  ++next_chunk_index_;
  complete_ = ends;
  return absl::OkStatus();
}

absl::Status PayloadReceiver::CheckComplete() const {
  // 14. Complete.
  if (complete_) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(header_.Label(), "truncated: received ", received_, " of ",
                                                 header_.encoded_bytes, " bytes in ", next_chunk_index_,
                                                 " chunks, the last chunk is missing"));
}

absl::StatusOr<std::string> PayloadReceiver::TakeRawLayout(bool zstd, absl::string_view encoding_name) {
  const std::string label = header_.Label();
  if (finished_) return absl::FailedPreconditionError(label + "Finish() called twice");
  RETURN_IF_ERROR(CheckComplete());
  finished_ = true;
  std::string encoded = std::move(buffer_);
  buffer_.clear();
  if (!zstd) return encoded;
  // 15. Decode into exactly raw_bytes.
  std::string raw(static_cast<size_t>(header_.raw_bytes), '\0');
  RETURN_IF_ERROR(ZstdDecodeExact(absl::StrCat(label, encoding_name, ": "), encoded, raw.size(), raw.data()));
  return raw;
}

}  // namespace internal

// Decoding state of one mask payload: the tensor being filled, the checked masks not yet
// taken, and (ZSTD_BITS) the streaming decompressor.
struct MaskAssembler::Decoder {
  struct FreeDctx {
    void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
  };
  std::unique_ptr<ZSTD_DCtx, FreeDctx> zstd;
  size_t tensor = 0;             // index of the header tensor being filled
  std::vector<uint8_t> current;  // its raw layout, `filled` bytes of it received
  size_t filled = 0;
  int64_t produced = 0;          // raw bytes decoded so far
  bool frame_ended = false;      // the zstd frame is complete
  bool first_chunk = true;
  std::vector<PackedMask> decoded;
  absl::Status failed;           // set by a failed AddChunk: every later call fails
  bool finished = false;
};

namespace {
// Frames whose window exceeds 2^24 bytes are refused: it bounds the decompressor's memory.
// The sender (level 3) uses at most 2^21.
constexpr int kZstdMaxWindowLog = 24;
// ZSTD_FRAMEHEADERSIZE_MAX: a frame header is complete within this many bytes.
constexpr size_t kZstdFrameHeaderMaxBytes = 18;

size_t TensorRawBytes(const PayloadTensor& t) { return static_cast<size_t>((NumElements(t.shape) + 7) / 8); }
}  // namespace

MaskAssembler::MaskAssembler(PayloadHeader header, int64_t max_chunk_bytes)
    : receiver_(std::move(header), max_chunk_bytes, /*keep_bytes=*/false), decoder_(std::make_unique<Decoder>()) {
  if (receiver_.header().encoding == PayloadEncoding::kZstdBits) {
    decoder_->zstd.reset(ZSTD_createDCtx());
    ZSTD_DCtx_setParameter(decoder_->zstd.get(), ZSTD_d_windowLogMax, kZstdMaxWindowLog);
  }
  decoder_->current.resize(TensorRawBytes(receiver_.header().tensors.front()));
}
MaskAssembler::MaskAssembler(MaskAssembler&&) noexcept = default;
MaskAssembler& MaskAssembler::operator=(MaskAssembler&&) noexcept = default;
MaskAssembler::~MaskAssembler() = default;

absl::Status MaskAssembler::AddChunk(const PayloadChunk& chunk) {
  if (!decoder_->failed.ok()) return absl::FailedPreconditionError(absl::StrCat("payload already failed: ", decoder_->failed.message()));
  RETURN_IF_ERROR(receiver_.AddChunk(chunk));
  if (absl::Status s = Decode(chunk.data); !s.ok()) {
    decoder_->failed = s;
    return s;
  }
  return absl::OkStatus();
}

absl::Status MaskAssembler::Decode(absl::string_view data) {
  if (decoder_->zstd != nullptr) return DecodeZstd(data);
  Decoder& d = *decoder_;
  const size_t tensors = receiver_.header().tensors.size();
  while (!data.empty()) {
    if (d.tensor == tensors) return absl::InternalError("raw bytes beyond the payload's tensors");  // encoded == raw
    const size_t n = std::min(data.size(), d.current.size() - d.filled);
    std::memcpy(d.current.data() + d.filled, data.data(), n);
    d.filled += n;
    d.produced += static_cast<int64_t>(n);
    data.remove_prefix(n);
    if (d.filled == d.current.size()) RETURN_IF_ERROR(CompleteTensor());
  }
  return absl::OkStatus();
}

absl::Status MaskAssembler::DecodeZstd(absl::string_view data) {
  Decoder& d = *decoder_;
  const PayloadHeader& header = receiver_.header();
  const std::string label = absl::StrCat(header.Label(), "ZSTD_BITS: ");
  if (d.first_chunk) {
    d.first_chunk = false;
    static constexpr char kZstdMagic[4] = {'\x28', '\xB5', '\x2F', '\xFD'};  // 0xFD2FB528, little-endian
    if (data.size() >= 4 && data.substr(0, 4) != absl::string_view(kZstdMagic, 4)) {
      return absl::InvalidArgumentError(label + "zstd payload is not a zstd frame");
    }
    if (data.size() >= kZstdFrameHeaderMaxBytes) {
      const unsigned long long declared = ZSTD_getFrameContentSize(data.data(), data.size());
      if (declared == ZSTD_CONTENTSIZE_ERROR) return absl::InvalidArgumentError(label + "zstd payload is not a zstd frame");
      if (declared != ZSTD_CONTENTSIZE_UNKNOWN && declared != static_cast<unsigned long long>(header.raw_bytes)) {
        return absl::InvalidArgumentError(absl::StrCat(label, "zstd frame declares ", declared,
                                                       " bytes of content, expected raw_bytes ", header.raw_bytes));
      }
    }
  }
  ZSTD_inBuffer in{data.data(), data.size(), 0};
  while (true) {
    if (d.frame_ended) {
      if (in.pos == in.size) return absl::OkStatus();
      return absl::InvalidArgumentError(absl::StrCat(label, "zstd payload is not exactly one zstd frame (frame ends at byte ",
                                                     receiver_.bytes_received() - static_cast<int64_t>(in.size - in.pos), ")"));
    }
    const bool all_produced = d.tensor == header.tensors.size();
    uint8_t spare = 0;
    ZSTD_outBuffer out = all_produced ? ZSTD_outBuffer{&spare, 1, 0}
                                      : ZSTD_outBuffer{d.current.data() + d.filled, d.current.size() - d.filled, 0};
    const size_t ret = ZSTD_decompressStream(d.zstd.get(), &out, &in);
    if (ZSTD_isError(ret)) {
      return absl::InvalidArgumentError(absl::StrCat(label, "zstd decompression failed: ", ZSTD_getErrorName(ret),
                                                     " (output limited to raw_bytes ", header.raw_bytes, ")"));
    }
    if (all_produced && out.pos > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(label, "zstd frame decompresses to more than raw_bytes ", header.raw_bytes));
    }
    d.filled += out.pos;
    d.produced += static_cast<int64_t>(out.pos);
    const bool output_full = out.pos == out.size;
    if (!all_produced && d.filled == d.current.size()) RETURN_IF_ERROR(CompleteTensor());
    if (ret == 0) {
      d.frame_ended = true;
      continue;
    }
    if (in.pos == in.size && !output_full) return absl::OkStatus();  // needs the next chunk
  }
}

absl::Status MaskAssembler::CompleteTensor() {
  Decoder& d = *decoder_;
  const PayloadHeader& header = receiver_.header();
  const PayloadTensor& t = header.tensors[d.tensor];
  const std::string tensor_label = Label(t.name);
  // 16. Size and padding (PackedMask::FromBytes checks both).
  auto mask = PackedMask::FromBytes(t.shape, std::move(d.current));
  if (!mask.ok()) return absl::InvalidArgumentError(tensor_label + std::string(mask.status().message()));
  // 17. Count.
  const int64_t ones = mask->CountOnes();
  if (ones != t.declared_count) {
    return absl::InvalidArgumentError(
        absl::StrCat(tensor_label, "mask has ", ones, " pruned weights, declared_count is ", t.declared_count));
  }
  // 18. N:M.
  RETURN_IF_ERROR(CheckMaskPattern(t.name, *mask, header.pattern));
  d.decoded.push_back(*std::move(mask));
  ++d.tensor;
  d.filled = 0;
  d.current = std::vector<uint8_t>(d.tensor < header.tensors.size() ? TensorRawBytes(header.tensors[d.tensor]) : 0);
  return absl::OkStatus();
}

std::vector<PackedMask> MaskAssembler::TakeDecoded() {
  std::vector<PackedMask> out;
  out.swap(decoder_->decoded);
  return out;
}

absl::StatusOr<std::vector<PackedMask>> MaskAssembler::Finish() {
  Decoder& d = *decoder_;
  const PayloadHeader& header = receiver_.header();
  if (d.finished) return absl::FailedPreconditionError(header.Label() + "Finish() called twice");
  if (!d.failed.ok()) return absl::FailedPreconditionError(absl::StrCat("payload already failed: ", d.failed.message()));
  d.finished = true;
  RETURN_IF_ERROR(receiver_.CheckComplete());
  // 15. The zstd frame ended, with exactly raw_bytes decoded.
  if (d.zstd != nullptr && !d.frame_ended) {
    return absl::InvalidArgumentError(absl::StrCat(header.Label(), "ZSTD_BITS: zstd frame is truncated: it decompressed to ",
                                                   d.produced, " bytes, expected raw_bytes ", header.raw_bytes));
  }
  if (d.produced != header.raw_bytes || d.tensor != header.tensors.size()) {
    return absl::InvalidArgumentError(absl::StrCat(header.Label(), "zstd decompressed to ", d.produced,
                                                   " bytes, expected raw_bytes ", header.raw_bytes));
  }
  return TakeDecoded();
}

absl::StatusOr<std::vector<PackedMask>> DecodeMasks(const EncodedPayload& payload,
                                                    const MaskExpectations& expect) {
  ASSIGN_OR_RETURN(MaskAssembler assembler, MaskAssembler::Create(payload.header, expect));
  for (const PayloadChunk& chunk : payload.chunks) RETURN_IF_ERROR(assembler.AddChunk(chunk));
  return assembler.Finish();
}

// ---- float32 payloads ---------------------------------------------------------------------

absl::StatusOr<EncodedPayload> EncodeFloat32(std::string tensor_name, std::vector<int64_t> shape,
                                             absl::Span<const float> values, PayloadKind kind,
                                             size_t max_chunk_bytes) {
  RETURN_IF_ERROR(CheckName(tensor_name));
  ASSIGN_OR_RETURN(const int64_t numel, CheckShape(tensor_name, shape));
  if (static_cast<int64_t>(values.size()) != numel) {
    return absl::InvalidArgumentError(absl::StrCat(Label(tensor_name), values.size(),
                                                   " values for shape ", ShapeToString(shape)));
  }
  if (max_chunk_bytes == 0) {
    return absl::InvalidArgumentError(Label(tensor_name) + "max_chunk_bytes must be >= 1");
  }
  static_assert(sizeof(float) == 4, "float32 payloads need IEEE-754 binary32");
  std::string raw(values.size() * 4, '\0');
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat(Label(tensor_name), "value ", i, " is not finite"));
    }
    uint32_t bits;
    std::memcpy(&bits, &values[i], 4);
    for (int b = 0; b < 4; ++b) raw[4 * i + b] = static_cast<char>((bits >> (8 * b)) & 0xFF);
  }
  EncodedPayload out;
  PayloadHeader& h = out.header;
  h.tensors.push_back({std::move(tensor_name), std::move(shape), numel});
  h.kind = kind;
  h.raw_bytes = static_cast<int64_t>(raw.size());
  bool compressed = false;
  const std::string encoded = CompressIfItPays(raw.data(), raw.size(), &compressed);
  h.encoding = compressed ? PayloadEncoding::kZstdF32 : PayloadEncoding::kRawF32;
  h.encoded_bytes = static_cast<int64_t>(encoded.size());
  CutIntoChunks(encoded, max_chunk_bytes, &out);
  return out;
}

absl::StatusOr<Float32Assembler> Float32Assembler::Create(PayloadHeader header,
                                                          const Float32Expectations& expect) {
  if (header.kind != expect.kind) {
    return absl::UnimplementedError(absl::StrCat(
        header.Label(), "payload kind ", static_cast<int32_t>(header.kind), " is not handled here, expected ",
        static_cast<int32_t>(expect.kind)));
  }
  if (header.tensors.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(header.Label(), "a float32 payload covers exactly one tensor, got ", header.tensors.size()));
  }
  const PayloadTensor& tensor = header.tensors.front();
  const absl::string_view name = tensor.name;
  RETURN_IF_ERROR(CheckName(name));
  ASSIGN_OR_RETURN(const int64_t numel, CheckShape(name, tensor.shape));
  if (tensor.shape != expect.shape) {
    return absl::InvalidArgumentError(
        absl::StrCat(Label(name), "shape ", ShapeToString(tensor.shape),
                     " does not match the expected shape ", ShapeToString(expect.shape)));
  }
  if (header.pattern.n != 0 || header.pattern.m != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(Label(name), "float32 payload carries pattern ", PatternToString(header.pattern)));
  }
  const int64_t raw_bytes = 4 * numel;
  if (raw_bytes > expect.max_raw_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(Label(name), "payload needs ", raw_bytes,
                                                     " bytes, above the limit of ", expect.max_raw_bytes));
  }
  if (header.raw_bytes != raw_bytes || tensor.declared_count != numel) {
    return absl::InvalidArgumentError(absl::StrCat(
        Label(name), "raw_bytes ", header.raw_bytes, " and declared_count ", tensor.declared_count,
        ", expected ", raw_bytes, " and ", numel, " for shape ", ShapeToString(tensor.shape)));
  }
  switch (header.encoding) {
    case PayloadEncoding::kRawF32:
      if (header.encoded_bytes != raw_bytes) {
        return absl::InvalidArgumentError(absl::StrCat(Label(name), "RAW_F32 encoded_bytes is ",
                                                       header.encoded_bytes, ", expected ", raw_bytes));
      }
      break;
    case PayloadEncoding::kZstdF32:
      if (header.encoded_bytes < 1 || header.encoded_bytes >= raw_bytes) {
        return absl::InvalidArgumentError(absl::StrCat(Label(name), "ZSTD_F32 encoded_bytes is ",
                                                       header.encoded_bytes, ", expected 1..",
                                                       raw_bytes - 1));
      }
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          Label(name), "encoding ", static_cast<int32_t>(header.encoding), " is not a float32 encoding"));
  }
  return Float32Assembler(std::move(header), expect.max_chunk_bytes);
}

absl::Status Float32Assembler::AddChunk(const PayloadChunk& chunk) { return receiver_.AddChunk(chunk); }

absl::StatusOr<std::vector<float>> Float32Assembler::Finish() {
  const std::string label = receiver_.header().Label();
  ASSIGN_OR_RETURN(const std::string raw,
                   receiver_.TakeRawLayout(receiver_.header().encoding == PayloadEncoding::kZstdF32, "ZSTD_F32"));
  const size_t raw_bytes = raw.size();
  std::vector<float> values(raw_bytes / 4);
  for (size_t i = 0; i < values.size(); ++i) {
    uint32_t bits = 0;
    for (int b = 0; b < 4; ++b) bits |= uint32_t{static_cast<uint8_t>(raw[4 * i + b])} << (8 * b);
    std::memcpy(&values[i], &bits, 4);
    if (!std::isfinite(values[i])) {
      return absl::InvalidArgumentError(absl::StrCat(label, "value ", i, " is not finite"));
    }
  }
  return values;
}

absl::StatusOr<std::vector<float>> DecodeFloat32(const EncodedPayload& payload,
                                                 const Float32Expectations& expect) {
  ASSIGN_OR_RETURN(Float32Assembler assembler, Float32Assembler::Create(payload.header, expect));
  for (const PayloadChunk& chunk : payload.chunks) RETURN_IF_ERROR(assembler.AddChunk(chunk));
  return assembler.Finish();
}

}  // namespace fedprllm
