// The job's sparsity rule for site masks: declared counts at the header, per-row popcounts
// over the packed bytes as each tensor is decoded.
#include "server/mask_plausibility.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace fedprllm {
namespace {

int64_t RowLength(const std::vector<int64_t>& shape) { return shape.empty() ? 1 : shape.back(); }

}  // namespace

absl::StatusOr<SiteGroup> ParseSiteGroup(absl::string_view text) {
  if (text == "row") return SiteGroup::kRow;
  if (text == "layer") return SiteGroup::kLayer;
  if (text == "any") return SiteGroup::kAny;
  return absl::InvalidArgumentError(absl::StrCat("\"", text, "\": expected row, layer or any"));
}

absl::string_view SiteGroupName(SiteGroup group) {
  switch (group) {
    case SiteGroup::kRow: return "row";
    case SiteGroup::kLayer: return "layer";
    case SiteGroup::kAny: return "any";
  }
  return "?";
}

namespace internal {

int64_t CountOnesInBitRange(const uint8_t* bytes, int64_t begin, int64_t end) {
  if (begin >= end) return 0;
  int64_t count = 0;
  int64_t first_byte = begin >> 3;
  const int64_t last_byte = (end - 1) >> 3;  // inclusive
  if (first_byte == last_byte) {
    const unsigned width = static_cast<unsigned>(end - begin);
    const unsigned b = bytes[first_byte] >> (begin & 7);
    return __builtin_popcount(b & ((1u << width) - 1u));
  }
  if ((begin & 7) != 0) {  // the partial first byte
    count += __builtin_popcount(static_cast<unsigned>(bytes[first_byte]) >> (begin & 7));
    ++first_byte;
  }
  int64_t full_end = (end & 7) == 0 ? last_byte + 1 : last_byte;  // bytes [first_byte, full_end) are whole
  int64_t i = first_byte;
  for (; i + 8 <= full_end; i += 8) {
    uint64_t word;
    std::memcpy(&word, bytes + i, 8);
    count += __builtin_popcountll(word);
  }
  for (; i < full_end; ++i) count += __builtin_popcount(bytes[i]);
  if ((end & 7) != 0) count += __builtin_popcount(bytes[last_byte] & ((1u << (end & 7)) - 1u));
  return count;
}

}  // namespace internal

std::string MaskPlausibility::RuleName() const {
  switch (group_) {
    case SiteGroup::kRow:
      return absl::StrCat("the job's Wanda row rule (site_group row, sparsity ", pattern_.sparsity, ")");
    case SiteGroup::kLayer:
      return absl::StrCat("the job's layer rule (site_group layer, sparsity ", pattern_.sparsity, ")");
    case SiteGroup::kAny: break;
  }
  return "no sparsity rule (site_group any)";
}

std::optional<int64_t> MaskPlausibility::ExpectedCount(const std::vector<int64_t>& shape) const {
  if (pattern_.structured()) return std::nullopt;  // checks 6 and 18 of the wire format
  const int64_t numel = NumElements(shape);
  switch (group_) {
    case SiteGroup::kRow: {
      const int64_t row = RowLength(shape);
      return numel / row * NumToPrune(row, pattern_.sparsity);
    }
    case SiteGroup::kLayer: return NumToPrune(numel, pattern_.sparsity);
    case SiteGroup::kAny: break;
  }
  return std::nullopt;
}

absl::Status MaskPlausibility::CheckHeader(const PayloadHeader& header) const {
  for (const PayloadTensor& t : header.tensors) {
    const std::optional<int64_t> expected = ExpectedCount(t.shape);
    if (!expected.has_value() || t.declared_count == *expected) continue;
    std::string how;
    if (group_ == SiteGroup::kRow) {
      const int64_t row = RowLength(t.shape);
      how = absl::StrCat(" (", NumToPrune(row, pattern_.sparsity), " of ", row, " in each of ",
                         NumElements(t.shape) / row, " rows)");
    } else {
      how = absl::StrCat(" of its ", NumElements(t.shape), " weights");
    }
    return absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "': declared_count ", t.declared_count,
                                                   ", but ", RuleName(), " needs exactly ", *expected, how));
  }
  return absl::OkStatus();
}

absl::Status MaskPlausibility::CheckMask(absl::string_view tensor_name, const PackedMask& mask) const {
  if (group_ != SiteGroup::kRow || pattern_.structured() || mask.numel() == 0) return absl::OkStatus();
  const int64_t row = RowLength(mask.shape());
  const int64_t rows = mask.numel() / row;
  const int64_t k = NumToPrune(row, pattern_.sparsity);
  const uint8_t* bytes = mask.bytes().data();
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t ones = internal::CountOnesInBitRange(bytes, r * row, (r + 1) * row);
    if (ones != k) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", tensor_name, "': row ", r, " prunes ", ones, " of ",
                                                     row, " weights; ", RuleName(), " needs exactly ", k));
    }
  }
  return absl::OkStatus();
}

}  // namespace fedprllm
