// Server-side mask aggregation: count client prune votes per weight, choose the global mask
// (most-voted weights per comparison group), and apply it with optional weight scaling.
// Results depend only on the multiset of client masks, never on arrival order.
//
//   VoteCounter votes({4096, 11008});
//   for (const PackedMask& m : client_masks) RETURN_IF_ERROR(votes.Add(m));
//   ASSIGN_OR_RETURN(PackedMask global, ChooseMask(votes, weight, options, "layers.0.mlp.up"));
//   at::Tensor pruned = ApplyDecision(weight, global, options.weight_scaling ? &votes : nullptr);
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/packed_mask.h"
#include "engine/mask_selection.h"

namespace fedprllm {

// Prune-vote counters for one tensor: one byte per weight when at most 255 clients can
// vote, else two. Not thread-safe; Add calls must be serialized by the caller.
class VoteCounter {
 public:
  static constexpr int kMaxClients = 65535;

  // All counters zero, no clients. `shape` is the tensor's shape; at most `max_clients`
  // (1..kMaxClients; clamped) masks can be added.
  explicit VoteCounter(std::vector<int64_t> shape, int max_clients = kMaxClients);

  // Adds one client's mask (bit set = that client prunes the weight). Fails without changing
  // state if the mask's shape or byte count does not match, or if max_clients masks were
  // already added. Padding bits are ignored.
  absl::Status Add(const PackedMask& mask);

  int num_clients() const { return num_clients_; }
  int max_clients() const { return max_clients_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t numel() const { return numel_; }
  // 1 or 2.
  int bytes_per_weight() const { return narrow_ ? 1 : 2; }
  // Per-weight vote counts (0..num_clients) as a new int32 tensor of shape().
  at::Tensor votes() const;
  // Calls `f` with a const pointer to the counters, row-major, one per weight: a
  // const uint8_t* when bytes_per_weight() is 1, a const uint16_t* otherwise. Returns what
  // `f` returns.
  template <typename F>
  decltype(auto) VisitCounts(F&& f) const {
    return narrow_ ? f(static_cast<const uint8_t*>(narrow_counts_.data()))
                   : f(static_cast<const uint16_t*>(wide_counts_.data()));
  }

 private:
  std::vector<int64_t> shape_;
  int64_t numel_ = 0;
  int max_clients_ = kMaxClients;
  bool narrow_ = false;
  std::vector<uint8_t> narrow_counts_;  // when narrow_
  std::vector<uint16_t> wide_counts_;   // otherwise
  int num_clients_ = 0;
};

namespace vote_internal {
// The kernels of VoteCounter::Add, exposed so tests can compare the paths: adds bit i of
// `bits` (least significant bit first, (n + 7) / 8 bytes) to counts[i] for every i < n.
// `simd` true uses AVX2 where the CPU has it, false forces the portable spread-table path;
// both give the same counters. Requires counts[i] + 1 to fit the counter (no counter at its
// maximum when its bit is set); at most n counters are written.
void AddBits(const uint8_t* bits, int64_t n, uint8_t* counts, bool simd);
void AddBits(const uint8_t* bits, int64_t n, uint16_t* counts, bool simd);
}  // namespace vote_internal

// Order among weights with equal vote counts at the selection boundary.
enum class TieBreak {
  // Smaller |W| is pruned first, then the lower row-major flat index.
  kSmallerMagnitude,
  // A seeded pseudo-random order (see ChooseMask), then the lower flat index.
  kRandom,
  // The lower row-major flat index first: FedPrLLM's stable-sort rule (in a row group the
  // lower column, in a column group the lower row).
  kIndex,
};
// "magnitude" | "random" | "index".
absl::StatusOr<TieBreak> ParseTieBreak(std::string_view text);
std::string_view TieBreakName(TieBreak tie_break);

struct AggregationOptions {
  // Which weights compete for pruning. Ignored for N:M patterns. Default: kLayer.
  ComparisonGroup group = ComparisonGroup::kLayer;
  // How many weights to prune per group. Default: unstructured 50%.
  SparsityPattern pattern;
  // Order among equal vote counts. Default: kSmallerMagnitude.
  TieBreak tie_break = TieBreak::kSmallerMagnitude;
  // Seed of the kRandom order. Default: 0.
  uint64_t seed = 0;
  // Scale kept weights by the fraction of clients that kept them (see ApplyDecision).
  // Default: false.
  bool weight_scaling = false;
};

// Chooses the global mask for one tensor: in each group (matrix, row or column) exactly
// NumToPrune(group_size, sparsity) weights with the MOST votes are pruned; for N:M, the n
// most-voted of every run of m consecutive elements in a row. Ties per options.tie_break.
// kRandom priority of flat index i (lower = pruned first):
//   stream = SplitMix64Mix(seed ^ SplitMix64Mix(FNV-1a-64(tensor_name)))
//   priority(i) = SplitMix64Mix(stream + (i + 1) * 0x9E3779B97F4A7C15) >> 32
// where SplitMix64Mix is splitmix64's output finalizer (common/splitmix64.h); identical on
// every platform.
// Fails if the options are invalid or weight's shape differs from the counter's.
absl::StatusOr<PackedMask> ChooseMask(const VoteCounter& votes, const at::Tensor& weight,
                                      const AggregationOptions& options,
                                      std::string_view tensor_name);

// Returns weight with pruned entries zeroed, in weight's dtype. If votes_for_scaling is not
// null (and has at least one client), each kept weight is also multiplied by
// (num_clients - votes) / num_clients, computed in float32 and cast once; a kept weight that
// every client pruned therefore becomes 0. Pruned entries are +0. With scaling, weight must be
// floating point; the work is done on CPU and the result returned on weight's device.
// Preconditions (violations throw c10::Error): the mask's and the counter's shapes equal
// weight's.
at::Tensor ApplyDecision(const at::Tensor& weight, const PackedMask& mask,
                         const VoteCounter* votes_for_scaling);

// int64 tensor of num_clients + 1 entries: entry v = number of weights with exactly v votes.
at::Tensor VoteHistogram(const VoteCounter& votes);

}  // namespace fedprllm
