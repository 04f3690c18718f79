// Packing of 0/1 masks into k-bit vote fields for the secure sum.
#include "secagg/vote_packing.h"

#include "absl/strings/str_cat.h"

namespace fedprllm::secagg {

int VoteFieldBits(int sites) {
  int bits = 1;
  while ((1 << bits) < sites + 1) ++bits;
  return bits;
}

int64_t PackedVoteWords(int64_t weights, int field_bits) {
  const int64_t per_word = 64 / field_bits;
  return (weights + per_word - 1) / per_word;
}

std::vector<uint64_t> PackVotes(const PackedMask& mask, int field_bits) {
  const int64_t per_word = 64 / field_bits;
  std::vector<uint64_t> words(PackedVoteWords(mask.numel(), field_bits), 0);
  for (int64_t i = 0; i < mask.numel(); ++i) {
    if (mask.Get(i)) words[i / per_word] |= uint64_t{1} << ((i % per_word) * field_bits);
  }
  return words;
}

absl::StatusOr<std::vector<uint8_t>> UnpackVoteCounts(absl::Span<const uint64_t> sum, int field_bits, int64_t weights) {
  if (field_bits < 1 || field_bits > 8) return absl::InvalidArgumentError(absl::StrCat("vote fields of ", field_bits, " bits"));
  const int64_t per_word = 64 / field_bits;
  if (static_cast<int64_t>(sum.size()) != PackedVoteWords(weights, field_bits)) {
    return absl::InvalidArgumentError(absl::StrCat("a vote sum of ", sum.size(), " words for ", weights, " weights; expected ",
                                                   PackedVoteWords(weights, field_bits)));
  }
  const uint64_t field = (uint64_t{1} << field_bits) - 1;
  std::vector<uint8_t> counts(weights);
  for (int64_t i = 0; i < weights; ++i) {
    counts[i] = static_cast<uint8_t>((sum[i / per_word] >> ((i % per_word) * field_bits)) & field);
  }
  const int64_t used = weights - (static_cast<int64_t>(sum.size()) - 1) * per_word;  // fields in the last word
  if (!sum.empty() && used * field_bits < 64 && (sum.back() >> (used * field_bits)) != 0) {
    return absl::InvalidArgumentError("the vote sum has bits beyond its last field");
  }
  return counts;
}

}  // namespace fedprllm::secagg
