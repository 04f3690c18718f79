// Pruning-mask selection: Wanda/magnitude scores, exact lowest-k selection per comparison
// group (matrix, row, column) or N:M run, and conversion between bool tensors and PackedMask.
//
//   at::Tensor score = WandaScore(weight, input_sq_norm);     // [out, in] float32
//   at::Tensor prune = SelectLowest(score, ComparisonGroup::kRow, {0.5});  // bool, true = prune
//   PackedMask mask = ToPackedMask(prune);
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/packed_mask.h"

namespace fedprllm {

// One decoder layer's masks (1 = prune) keyed by full tensor name, ordered as kLinearNames.
using LayerMasks = std::vector<std::pair<std::string, PackedMask>>;

// Which weights compete with each other when choosing the ones to prune.
enum class ComparisonGroup {
  kLayer,   // the whole matrix (any shape; flattened row-major)
  kRow,     // each output row of a 2-D [out, in] matrix
  kColumn,  // each input column of a 2-D [out, in] matrix
};
// "layer" | "row" | "column".
absl::StatusOr<ComparisonGroup> ParseComparisonGroup(std::string_view text);
std::string_view ComparisonGroupName(ComparisonGroup group);

// How many weights to prune, and in what structure.
struct SparsityPattern {
  // Fraction of each comparison group to prune, in [0, 1). For N:M it is n/m (informative).
  // Default: 0.5.
  double sparsity = 0.5;
  // N:M semi-structured sparsity: prune exactly n of every m consecutive elements of a row.
  // m == 0 (default) means unstructured, and then n must be 0.
  int n = 0;
  int m = 0;

  bool structured() const { return m != 0; }
  // Checks sparsity in [0, 1) and, for N:M, 1 <= n < m.
  absl::Status Validate() const;
  // Checks that a matrix of `shape` can be pruned with this pattern: N:M needs a 2-D shape
  // whose last dimension is divisible by m. Unstructured accepts any shape.
  absl::Status CheckShape(absl::Span<const int64_t> shape) const;
  // "unstructured" or "n:m".
  std::string ToString() const;
  // Parses "unstructured" (uses `sparsity`) or "n:m" such as "2:4", "4:8" (sets sparsity to
  // n/m and ignores `sparsity`). The result is validated.
  static absl::StatusOr<SparsityPattern> Parse(std::string_view text, double sparsity = 0.5);
};

// Number of weights pruned in an unstructured group of `group_size` weights:
// floor(group_size * sparsity), computed with a 1e-9 slack so that e.g. 10 * 0.7 gives 7.
// Every component that checks counts must use this function.
int64_t NumToPrune(int64_t group_size, double sparsity);

// Returns a bool tensor of `score`'s shape, true = prune.
// Unstructured: within each group (whole tensor, each row, or each column) exactly
//   NumToPrune(group_size, p.sparsity) entries with the lowest score are pruned.
// N:M (`group` is ignored): within each run of m consecutive elements of a row, exactly the
//   n lowest are pruned.
// Ties: among equal scores the element with the lower row-major flat index is pruned first
// (for kColumn this is the lower row). NaN ranks above +infinity (pruned last).
// Any real or integer dtype is accepted and compared exactly (no conversion).
// Preconditions (violations throw c10::Error): p.Validate() and p.CheckShape(score shape) are
// OK; kRow/kColumn need a 2-D score.
at::Tensor SelectLowest(const at::Tensor& score, ComparisonGroup group, const SparsityPattern& p);

// Wanda score |W| * sqrt(input_sq_norm) in float32, where input_sq_norm[j] is the summed
// squared activation of input feature j over the calibration tokens ([in] for W [out, in]).
// Negative norms (rounding) are clamped to 0. Throws c10::Error on shape mismatch.
at::Tensor WandaScore(const at::Tensor& weight, const at::Tensor& input_sq_norm);
// Magnitude score |W| in float32.
at::Tensor MagnitudeScore(const at::Tensor& weight);

// Wanda's default case without intermediate tensors: the packed row-group mask of the score
// |W| * sqrt(input_sq_norm), or of |W| when input_sq_norm is undefined (magnitude), with
// NumToPrune(in, sparsity) pruned per row. Always equal to
//   ToPackedMask(SelectLowest(WandaScore(weight, input_sq_norm), kRow, {sparsity})).
// Float32 CPU weights whose rows are a multiple of 8 long take a fused kernel (no score or
// bool tensors); anything else goes through the calls above. Throws c10::Error on bad shapes.
PackedMask RowMask(const at::Tensor& weight, const at::Tensor& input_sq_norm, double sparsity);

// Bool (or 0/1 integer) tensor -> PackedMask of the same shape (nonzero = pruned bit set).
PackedMask ToPackedMask(const at::Tensor& bool_mask);
// PackedMask -> bool tensor of the mask's shape. Padding bits are ignored.
at::Tensor FromPackedMask(const PackedMask& mask);

namespace internal {
// Selection kernels behind SelectLowest, exposed for tests. key: [G, L]. Both return bool [G, L]
// with exactly clamp(k, 0, L) true per row: the lowest keys in the (key, column index) order,
// NaN above +inf. LowestKPerRow runs nth_element on CPU tensors and the tensor-op kernel on
// other devices; LowestKPerRowTensorOps uses kthvalue plus a cumsum tie fix (any device).
at::Tensor LowestKPerRow(const at::Tensor& key, int64_t k);
at::Tensor LowestKPerRowTensorOps(const at::Tensor& key, int64_t k);
}  // namespace internal

}  // namespace fedprllm
