// PackedMask implementation: LSB-first bit packing with zero padding.
#include "common/packed_mask.h"


#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace fedprllm {

int64_t NumElements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeToString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

PackedMask::PackedMask(std::vector<int64_t> shape)
    : shape_(std::move(shape)), numel_(NumElements(shape_)), bytes_((numel_ + 7) / 8, 0) {}

absl::StatusOr<PackedMask> PackedMask::FromBytes(std::vector<int64_t> shape,
                                                 std::vector<uint8_t> bytes) {
  for (int64_t d : shape) {
    if (d < 0) return absl::InvalidArgumentError("mask shape has a negative dimension");
  }
  PackedMask mask;
  mask.shape_ = std::move(shape);
  mask.numel_ = NumElements(mask.shape_);
  const int64_t expected = (mask.numel_ + 7) / 8;
  if (static_cast<int64_t>(bytes.size()) != expected) {
    return absl::InvalidArgumentError(
        absl::StrCat("mask of shape ", ShapeToString(mask.shape_), " needs ", expected,
                     " bytes, got ", bytes.size()));
  }
  const int tail_bits = mask.numel_ % 8;
  if (tail_bits != 0 && (bytes.back() >> tail_bits) != 0) {
    return absl::InvalidArgumentError("mask padding bits in the last byte are not zero");
  }
  mask.bytes_ = std::move(bytes);
  return mask;
}

int64_t PackedMask::CountOnes() const {
  int64_t count = 0;
  for (uint8_t b : bytes_) count += __builtin_popcount(b);
  return count;
}

PackedMask PackedMask::FromBools(std::vector<int64_t> shape, absl::Span<const uint8_t> values) {
  PackedMask mask(std::move(shape));
  const int64_t n = mask.numel_;
  for (int64_t i = 0; i < n; ++i) {
    if (values[i]) mask.bytes_[i >> 3] |= uint8_t(1u << (i & 7));
  }
  return mask;
}

std::vector<uint8_t> PackedMask::ToBools() const {
  std::vector<uint8_t> out(numel_);
  for (int64_t i = 0; i < numel_; ++i) out[i] = Get(i);
  return out;
}

}  // namespace fedprllm
