// Mask selection: exact lowest-k per group (CPU: radix bucket plus nth_element for float keys,
// nth_element under a (key, index) order otherwise; other devices: kthvalue plus an
// index-ordered tie fix) and LSB-first packing to PackedMask.
#include "engine/mask_selection.h"

#include <ATen/NumericUtils.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <type_traits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace fedprllm {
namespace {

// Groups of at most this many elements use pairwise ranks instead of a selection algorithm.
constexpr int64_t kPairwiseMaxGroup = 16;

// Strict "x ranks below y" for keys: NaN ranks above everything, including +inf.
template <typename T>
bool Below(T x, T y) {
  if constexpr (std::is_integral_v<T>) {
    return x < y;
  } else {
    return at::_isnan(y) ? !at::_isnan(x) : x < y;
  }
}

// CPU kernel under the total order (key, column index), so the chosen set is unique.
// Short rows (N:M runs) count each element's rank directly; longer rows run std::nth_element
// over column indices (O(len) expected, one index buffer per thread).
template <typename T>
void LowestKCpu(const T* key, int64_t groups, int64_t len, int64_t k, bool* out) {
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / len);
  at::parallel_for(0, groups, grain, [&](int64_t begin, int64_t end) {
    std::vector<uint32_t> order(len <= kPairwiseMaxGroup ? 0 : len);
    for (int64_t g = begin; g < end; ++g) {
      const T* row = key + g * len;
      bool* dst = out + g * len;
      if (len <= kPairwiseMaxGroup) {
        for (int64_t i = 0; i < len; ++i) {
          int64_t rank = 0;  // elements ordered before i
          for (int64_t j = 0; j < i; ++j) rank += !Below(row[i], row[j]);
          for (int64_t j = i + 1; j < len; ++j) rank += Below(row[j], row[i]);
          dst[i] = rank < k;
        }
        continue;
      }
      std::iota(order.begin(), order.end(), 0u);
      std::nth_element(order.begin(), order.begin() + k, order.end(),
                       [row](uint32_t a, uint32_t b) {
                         return Below(row[a], row[b]) || (!Below(row[b], row[a]) && a < b);
                       });
      std::fill(dst, dst + len, false);
      for (int64_t i = 0; i < k; ++i) dst[order[i]] = true;
    }
  });
}

// Order-preserving image of a float under Below's order: -0 and +0 are equal, and every NaN
// ranks above +inf.
inline uint32_t OrderedBits(float x) {
  if (std::isnan(x)) return 0xFFFFFFFFu;
  if (x == 0.0f) x = 0.0f;
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

// Scratch space of one thread for RowLowestK.
struct RadixScratch {
  static constexpr int kBucketShift = 20;  // 12-bit buckets of the ordered bits
  std::vector<uint32_t> histogram = std::vector<uint32_t>(size_t{1} << (32 - kBucketShift));
  std::vector<uint64_t> bucket_keys;
};

// One row of OrderedBits keys, same order as LowestKCpu: a radix histogram finds the bucket
// that holds the k-th key (0 < k < len); every key in a lower bucket is chosen, and
// nth_element over (bits, index) pairs of that one bucket picks the rest. Two passes over
// the row plus a small selection.
void RowLowestK(const uint32_t* bits, int64_t len, int64_t k, RadixScratch* scratch, bool* dst) {
  std::vector<uint32_t>& histogram = scratch->histogram;
  std::fill(histogram.begin(), histogram.end(), 0u);
  for (int64_t i = 0; i < len; ++i) ++histogram[bits[i] >> RadixScratch::kBucketShift];
  uint32_t bucket = 0;
  int64_t below = 0;  // keys in buckets < bucket
  while (below + histogram[bucket] < k) below += histogram[bucket++];
  std::vector<uint64_t>& bucket_keys = scratch->bucket_keys;
  bucket_keys.clear();
  for (int64_t i = 0; i < len; ++i) {
    const uint32_t b = bits[i] >> RadixScratch::kBucketShift;
    dst[i] = b < bucket;
    if (b == bucket) bucket_keys.push_back(uint64_t{bits[i]} << 32 | uint64_t(i));
  }
  const int64_t need = k - below;  // in [1, histogram[bucket]]
  std::nth_element(bucket_keys.begin(), bucket_keys.begin() + (need - 1), bucket_keys.end());
  for (int64_t j = 0; j < need; ++j) dst[bucket_keys[j] & 0xFFFFFFFFu] = true;
}

void LowestKFloatRadix(const float* key, int64_t groups, int64_t len, int64_t k, bool* out) {
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / len);
  at::parallel_for(0, groups, grain, [&](int64_t begin, int64_t end) {
    std::vector<uint32_t> bits(len);
    RadixScratch scratch;
    for (int64_t g = begin; g < end; ++g) {
      const float* row = key + g * len;
      for (int64_t i = 0; i < len; ++i) bits[i] = OrderedBits(row[i]);
      RowLowestK(bits.data(), len, k, &scratch, out + g * len);
    }
  });
}

// RowMask's fused kernel: rows of `len` (a multiple of 8) float weights, per-column factors
// (sqrt of the input norm, or null for 1), k pruned per row, written as whole bytes.
void FusedRowMask(const float* weight, const float* column_factor, int64_t rows, int64_t len, int64_t k,
                  uint8_t* out) {
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / len);
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<uint32_t> bits(len);
    std::unique_ptr<bool[]> prune(new bool[len]);
    RadixScratch scratch;
    for (int64_t r = begin; r < end; ++r) {
      const float* w = weight + r * len;
      for (int64_t i = 0; i < len; ++i) {
        const float magnitude = std::fabs(w[i]);
        bits[i] = OrderedBits(column_factor == nullptr ? magnitude : magnitude * column_factor[i]);
      }
      RowLowestK(bits.data(), len, k, &scratch, prune.get());
      uint8_t* dst = out + r * (len / 8);
      for (int64_t b = 0; b < len / 8; ++b) {
        const bool* p = prune.get() + 8 * b;
        dst[b] = uint8_t(p[0] | p[1] << 1 | p[2] << 2 | p[3] << 3 | p[4] << 4 | p[5] << 5 | p[6] << 6 |
                         p[7] << 7);
      }
    }
  });
}

}  // namespace

namespace internal {

at::Tensor LowestKPerRow(const at::Tensor& key, int64_t k) {
  TORCH_CHECK(key.dim() == 2, "LowestKPerRow: need a 2-D key, got ", key.sizes());
  const int64_t groups = key.size(0), len = key.size(1);
  const auto bool_opts = key.options().dtype(at::kBool);
  if (k <= 0 || key.numel() == 0) return at::zeros({groups, len}, bool_opts);
  if (k >= len) return at::ones({groups, len}, bool_opts);
  if (!key.is_cpu()) return LowestKPerRowTensorOps(key, k);
  TORCH_CHECK(len <= std::numeric_limits<uint32_t>::max(), "group of ", len, " is too large");
  const at::Tensor in = key.contiguous();
  at::Tensor out = at::empty({groups, len}, bool_opts);
  if (in.scalar_type() == at::kFloat && len > kPairwiseMaxGroup) {
    LowestKFloatRadix(in.data_ptr<float>(), groups, len, k, out.data_ptr<bool>());
    return out;
  }
  AT_DISPATCH_ALL_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(), "LowestKPerRow", [&] {
    LowestKCpu<scalar_t>(in.data_ptr<scalar_t>(), groups, len, k, out.data_ptr<bool>());
  });
  return out;
}

at::Tensor LowestKPerRowTensorOps(const at::Tensor& key_in, int64_t k) {
  const int64_t groups = key_in.size(0), len = key_in.size(1);
  const auto bool_opts = key_in.options().dtype(at::kBool);
  if (k <= 0 || key_in.numel() == 0) return at::zeros({groups, len}, bool_opts);
  if (k >= len) return at::ones({groups, len}, bool_opts);
  at::Tensor key = key_in.contiguous();
  if (at::isFloatingType(key.scalar_type()) && key.isnan().any().item<bool>()) {
    // Comparisons with NaN are false, which this kernel cannot rank; the CPU kernel can.
    return internal::LowestKPerRow(key.cpu(), k).to(key.device());
  }
  if (len <= kPairwiseMaxGroup) {
    // rank[i] = #{j : key[j] < key[i] or (key[j] == key[i] and j < i)}; prune rank < k.
    at::Tensor rank = at::zeros({groups, len}, key.options().dtype(at::kByte));
    const at::Tensor pos = at::arange(len, key.options().dtype(at::kLong)).unsqueeze(0);
    for (int64_t j = 0; j < len; ++j) {
      const at::Tensor kj = key.narrow(1, j, 1);
      rank.add_((kj < key).logical_or_((kj == key).logical_and_(pos > j)));
    }
    return rank < k;
  }
  // Threshold v = k-th smallest key; take all keys < v and the first (k - #less) keys == v.
  const at::Tensor kth = std::get<0>(key.kthvalue(k, /*dim=*/1, /*keepdim=*/true));
  const at::Tensor less = key < kth;
  const at::Tensor need = k - less.sum(1, /*keepdim=*/true);
  const at::Tensor equal = key == kth;
  const auto count_type = len < std::numeric_limits<int32_t>::max() ? at::kInt : at::kLong;
  const at::Tensor equal_rank = at::cumsum(equal, 1, count_type);
  return less.logical_or_(equal.logical_and_(equal_rank <= need));
}

}  // namespace internal

absl::StatusOr<ComparisonGroup> ParseComparisonGroup(std::string_view text) {
  if (text == "layer") return ComparisonGroup::kLayer;
  if (text == "row") return ComparisonGroup::kRow;
  if (text == "column") return ComparisonGroup::kColumn;
  return absl::InvalidArgumentError(
      absl::StrCat("comparison group must be layer, row or column; got '", std::string(text), "'"));
}

std::string_view ComparisonGroupName(ComparisonGroup group) {
  switch (group) {
    case ComparisonGroup::kLayer:
      return "layer";
    case ComparisonGroup::kRow:
      return "row";
    case ComparisonGroup::kColumn:
      return "column";
  }
  return "unknown";
}

absl::Status SparsityPattern::Validate() const {
  if (!(sparsity >= 0.0 && sparsity < 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat("sparsity must be in [0, 1), got ", sparsity));
  }
  if (m == 0) {
    if (n != 0) return absl::InvalidArgumentError("unstructured pattern must have n == 0");
    return absl::OkStatus();
  }
  if (m < 0 || n < 1 || n >= m) {
    return absl::InvalidArgumentError(
        absl::StrCat("N:M pattern needs 1 <= n < m, got ", n, ":", m));
  }
  return absl::OkStatus();
}

absl::Status SparsityPattern::CheckShape(absl::Span<const int64_t> shape) const {
  if (!structured()) return absl::OkStatus();
  if (shape.size() != 2 || shape[1] % m != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(ToString(), " sparsity needs a 2-D matrix whose in-features are divisible by ",
                     m, ", got shape ", ShapeToString({shape.begin(), shape.end()})));
  }
  return absl::OkStatus();
}

std::string SparsityPattern::ToString() const {
  return structured() ? absl::StrCat(n, ":", m) : "unstructured";
}

absl::StatusOr<SparsityPattern> SparsityPattern::Parse(std::string_view text, double sparsity) {
  SparsityPattern p;
  if (text == "unstructured") {
    p.sparsity = sparsity;
  } else {
    // absl::string_view is not std::string_view in this abseil build.
    std::vector<std::string> parts =
        absl::StrSplit(absl::string_view(text.data(), text.size()), ':');
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &p.n) ||
        !absl::SimpleAtoi(parts[1], &p.m) || p.m == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sparsity pattern must be 'unstructured' or 'n:m', got '", std::string(text), "'"));
    }
    p.sparsity = p.m > 0 ? static_cast<double>(p.n) / p.m : 0.0;
  }
  if (absl::Status s = p.Validate(); !s.ok()) return s;
  return p;
}

int64_t NumToPrune(int64_t group_size, double sparsity) {
  return static_cast<int64_t>(std::floor(static_cast<double>(group_size) * sparsity + 1e-9));
}

at::Tensor SelectLowest(const at::Tensor& score, ComparisonGroup group, const SparsityPattern& p) {
  const absl::Status valid = p.Validate();
  TORCH_CHECK(valid.ok(), "SelectLowest: ", valid.ToString());
  const absl::Status fits = p.CheckShape(score.sizes().vec());
  TORCH_CHECK(fits.ok(), "SelectLowest: ", fits.ToString());
  if (score.numel() == 0) return at::zeros(score.sizes(), score.options().dtype(at::kBool));
  const at::Tensor& key = score;
  if (p.structured()) {
    const at::Tensor runs = key.contiguous().view({-1, p.m});
    return internal::LowestKPerRow(runs, p.n).view(score.sizes());
  }
  if (group == ComparisonGroup::kLayer) {
    const at::Tensor flat = key.contiguous().view({1, -1});
    return internal::LowestKPerRow(flat, NumToPrune(flat.size(1), p.sparsity)).view(score.sizes());
  }
  TORCH_CHECK(score.dim() == 2, "SelectLowest: row/column groups need a 2-D score, got ",
              score.sizes());
  if (group == ComparisonGroup::kRow) {
    const at::Tensor rows = key.contiguous();
    return internal::LowestKPerRow(rows, NumToPrune(rows.size(1), p.sparsity));
  }
  const at::Tensor cols = key.t().contiguous();  // [in, out]: one row per column
  return internal::LowestKPerRow(cols, NumToPrune(cols.size(1), p.sparsity)).t().contiguous();
}

at::Tensor WandaScore(const at::Tensor& weight, const at::Tensor& input_sq_norm) {
  TORCH_CHECK(
      weight.dim() == 2 && input_sq_norm.dim() == 1 && input_sq_norm.size(0) == weight.size(1),
      "WandaScore: weight ", weight.sizes(), " needs an input norm of shape [",
      weight.dim() == 2 ? weight.size(1) : -1, "], got ", input_sq_norm.sizes());
  return weight.to(at::kFloat)
      .abs()
      .mul_(  // abs() copies: to() may alias
          input_sq_norm.to(at::kFloat).clamp_min(0.0).sqrt_().unsqueeze(0));
}

at::Tensor MagnitudeScore(const at::Tensor& weight) {
  return weight.to(at::kFloat).abs();  // not abs_(): to() aliases a float input
}

PackedMask RowMask(const at::Tensor& weight, const at::Tensor& input_sq_norm, double sparsity) {
  const bool wanda = input_sq_norm.defined();
  TORCH_CHECK(weight.dim() == 2, "RowMask: need a 2-D weight, got ", weight.sizes());
  const int64_t rows = weight.size(0), len = weight.size(1), k = NumToPrune(len, sparsity);
  const bool fused = weight.is_cpu() && weight.scalar_type() == at::kFloat && len % 8 == 0 &&
                     len <= std::numeric_limits<uint32_t>::max() && k > 0 && k < len;
  if (!fused) {
    const at::Tensor score = wanda ? WandaScore(weight, input_sq_norm) : MagnitudeScore(weight);
    return ToPackedMask(SelectLowest(score, ComparisonGroup::kRow, SparsityPattern{sparsity}).cpu());
  }
  at::Tensor factor;
  if (wanda) {
    TORCH_CHECK(input_sq_norm.dim() == 1 && input_sq_norm.size(0) == len, "RowMask: weight ", weight.sizes(),
                " needs an input norm of shape [", len, "], got ", input_sq_norm.sizes());
    // The same float32 factors as WandaScore, so the products match it bit for bit.
    factor = input_sq_norm.to(at::kCPU, at::kFloat).clamp_min(0.0).sqrt_().contiguous();
  }
  const at::Tensor w = weight.contiguous();
  PackedMask mask({rows, len});
  FusedRowMask(w.data_ptr<float>(), wanda ? factor.data_ptr<float>() : nullptr, rows, len, k,
               mask.mutable_bytes().data());
  return mask;
}

PackedMask ToPackedMask(const at::Tensor& bool_mask) {
  PackedMask mask(bool_mask.sizes().vec());
  const at::Tensor bits = bool_mask.to(at::kBool).contiguous();
  const uint8_t* in = reinterpret_cast<const uint8_t*>(bits.data_ptr<bool>());
  uint8_t* out = mask.mutable_bytes().data();
  const int64_t numel = mask.numel(), full_bytes = numel / 8;
  at::parallel_for(0, full_bytes, 1 << 16, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const uint8_t* p = in + 8 * b;
      out[b] = uint8_t(p[0] | p[1] << 1 | p[2] << 2 | p[3] << 3 | p[4] << 4 | p[5] << 5 |
                       p[6] << 6 | p[7] << 7);
    }
  });
  for (int64_t i = 8 * full_bytes; i < numel; ++i) out[i >> 3] |= uint8_t(in[i] << (i & 7));
  return mask;
}

at::Tensor FromPackedMask(const PackedMask& mask) {
  at::Tensor out = at::empty(mask.shape(), at::TensorOptions().dtype(at::kBool));
  bool* dst = out.data_ptr<bool>();
  const uint8_t* src = mask.bytes().data();
  const int64_t numel = mask.numel(), full_bytes = numel / 8;
  at::parallel_for(0, full_bytes, 1 << 16, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      for (int j = 0; j < 8; ++j) dst[8 * b + j] = (src[b] >> j) & 1;
    }
  });
  for (int64_t i = 8 * full_bytes; i < numel; ++i) dst[i] = mask.Get(i);
  return out;
}

}  // namespace fedprllm
