// PackedMask: a 0/1 mask over a tensor, 1 bit per element. This is the in-memory and
// on-the-wire form of a pruning mask (docs/mask_wire_format.md specifies the bit order).
//
//   PackedMask m({4, 8});          // all zero (nothing pruned)
//   m.Set(3, true);                // element 3 of the row-major flattening is pruned
//   m.CountOnes();                 // 1
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace fedprllm {

class PackedMask {
 public:
  PackedMask() = default;
  // All bits zero. `shape` is the tensor's shape; the mask covers its row-major flattening.
  explicit PackedMask(std::vector<int64_t> shape);

  // Adopts `bytes` as the packed bits. Fails if the byte count is not ceil(numel/8)
  // or if any padding bit of the last byte is set.
  static absl::StatusOr<PackedMask> FromBytes(std::vector<int64_t> shape,
                                              std::vector<uint8_t> bytes);

  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t numel() const { return numel_; }
  // Bit i lives in byte i / 8 at bit position i % 8 (least significant bit first).
  const std::vector<uint8_t>& bytes() const { return bytes_; }
  std::vector<uint8_t>& mutable_bytes() { return bytes_; }

  bool Get(int64_t i) const { return (bytes_[i >> 3] >> (i & 7)) & 1; }
  void Set(int64_t i, bool value) {
    const uint8_t bit = uint8_t(1u << (i & 7));
    if (value) bytes_[i >> 3] |= bit; else bytes_[i >> 3] &= uint8_t(~bit);
  }
  // Number of set bits (pruned weights).
  int64_t CountOnes() const;

  // Packs a dense 0/1 byte array (one byte per element, nonzero = 1) of length numel.
  static PackedMask FromBools(std::vector<int64_t> shape, absl::Span<const uint8_t> values);
  // Unpacks into one byte (0 or 1) per element.
  std::vector<uint8_t> ToBools() const;

  bool operator==(const PackedMask& other) const {
    return shape_ == other.shape_ && bytes_ == other.bytes_;
  }

 private:
  std::vector<int64_t> shape_;
  int64_t numel_ = 0;
  std::vector<uint8_t> bytes_;
};

// Number of elements of a shape (1 for the empty shape).
int64_t NumElements(const std::vector<int64_t>& shape);
// "[4, 8]"
std::string ShapeToString(const std::vector<int64_t>& shape);

}  // namespace fedprllm
