// MaskPlausibility: what an honest site's masks look like under the job's own rules, checked
// on every upload as each tensor is decoded, before anything of the upload is committed or
// counted (docs/robustness.md §1). The wire format's checks (docs/mask_wire_format.md §6:
// padding, declared count == ones, N:M in every group of m) stay in MaskAssembler; this adds
// the job's sparsity rule on top: the declared count an honest mask must have, and, for
// Wanda's row group, exactly NumToPrune(row length, sparsity) pruned weights in EVERY row.
//
//   MaskPlausibility rule(SiteGroup::kRow, job_pattern);        // job_pattern: sparsity 0.5
//   RETURN_IF_ERROR(rule.CheckHeader(header));                  // before any chunk
//   for (PackedMask& m : assembler.TakeDecoded()) RETURN_IF_ERROR(rule.CheckMask(name, m));
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/mask_codec.h"
#include "common/packed_mask.h"
#include "engine/mask_selection.h"

namespace fedprllm {

// The comparison group every site's own masks use (the client's `local_group`).
enum class SiteGroup {
  kRow,    // Wanda's: each output row prunes exactly NumToPrune(row length, sparsity).
  kLayer,  // each tensor prunes exactly NumToPrune(numel, sparsity).
  kAny,    // no sparsity rule: only the wire format's checks (any count is accepted).
};
// "row" | "layer" | "any".
absl::StatusOr<SiteGroup> ParseSiteGroup(absl::string_view text);
absl::string_view SiteGroupName(SiteGroup group);

class MaskPlausibility {
 public:
  // `pattern`: the job's (its sparsity for unstructured jobs). For an N:M pattern the wire
  // format's checks 6 and 18 already are the whole rule (n of every m, so n/m of every row),
  // and this class checks nothing further.
  MaskPlausibility(SiteGroup group, SparsityPattern pattern) : group_(group), pattern_(pattern) {}

  // Pruned weights an honest mask of `shape` has, or nullopt where this class has no rule
  // (kAny, or an N:M pattern). Rows are the last dimension (a rank-1 shape is one row).
  std::optional<int64_t> ExpectedCount(const std::vector<int64_t>& shape) const;

  // Every tensor's declared_count equals ExpectedCount(shape). Call after MaskAssembler
  // accepted the header (shapes are then within the wire format's bounds). Errors:
  // INVALID_ARGUMENT "tensor 'NAME': declared_count D, but the job's row rule ... needs
  // exactly E (K of L in each of R rows)".
  absl::Status CheckHeader(const PayloadHeader& header) const;

  // For kRow (unstructured): every row of `mask` prunes exactly NumToPrune(row length,
  // sparsity) weights; the first row that does not is named. Row popcounts run over the
  // packed bytes, 64 bits at a time. Errors: INVALID_ARGUMENT "tensor 'NAME': row R prunes C
  // of L weights; the job's Wanda row rule (site_group row, sparsity S) needs exactly K".
  absl::Status CheckMask(absl::string_view tensor_name, const PackedMask& mask) const;

  // "the job's Wanda row rule (site_group row, sparsity 0.5)", for messages.
  std::string RuleName() const;

 private:
  SiteGroup group_;
  SparsityPattern pattern_;
};

namespace internal {
// Number of set bits in bits [begin, end) of the packed layout `bytes` (LSB first,
// docs/mask_wire_format.md §1). Requires 0 <= begin <= end <= 8 * size of `bytes`.
int64_t CountOnesInBitRange(const uint8_t* bytes, int64_t begin, int64_t end);
}  // namespace internal

}  // namespace fedprllm
