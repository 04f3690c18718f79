// Vote counts through the secure sum (docs/secure_aggregation.md, "Vote counts"): each site's
// 0/1 prune mask becomes k-bit fields, floor(64 / k) to a 64-bit word, with
// k = ceil(log2(C + 1)) for C sites. A field's sum over the sites is at most C < 2^k, so the
// modular sum of the words is every field's count with no carry between fields: the server
// learns each weight's vote count and no site's mask.
//
//   const int k = VoteFieldBits(sites);
//   std::vector<uint64_t> words = PackVotes(mask, k);           // each site, then MaskInput
//   ASSIGN_OR_RETURN(auto counts, UnpackVoteCounts(sum, k, mask.numel()));   // the server
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/packed_mask.h"

namespace fedprllm::secagg {

// ceil(log2(sites + 1)): 2 bits for 3 sites, 7 for 64, 8 for 255. `sites` in [1, 255].
int VoteFieldBits(int sites);
// Words holding `weights` fields of `field_bits` bits.
int64_t PackedVoteWords(int64_t weights, int field_bits);
// Weight i's bit goes to field i % per_word of word i / per_word (low bits first).
std::vector<uint64_t> PackVotes(const PackedMask& mask, int field_bits);
// The count of every weight from the summed words. INVALID_ARGUMENT for a word count that is
// not PackedVoteWords(weights, field_bits), or bits set beyond the last field.
absl::StatusOr<std::vector<uint8_t>> UnpackVoteCounts(absl::Span<const uint64_t> sum, int field_bits, int64_t weights);

}  // namespace fedprllm::secagg
