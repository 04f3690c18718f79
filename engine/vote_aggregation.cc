// Vote aggregation: byte-wide or uint16 vote counters (added 32 or 16 at a time with AVX2 where
// the CPU has it, else 8 or 4 at a time through spread tables), most-voted selection through a
// composite int64 key (votes, tie-break priority) fed to SelectLowest, and mask application
// with scaling.
#include "engine/vote_aggregation.h"

#include <ATen/Parallel.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define FEDPRLLM_VOTE_AVX2 1
#endif

#include <algorithm>
#include <array>
#include <cstring>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "common/splitmix64.h"

namespace fedprllm {
namespace {

constexpr int64_t kGrain = 1 << 16;

// BuildKey's loop over one counter width.
template <typename Count>
void FillKey(const VoteCounter& votes, const Count* counts, const at::Tensor& weight,
             const AggregationOptions& options, std::string_view tensor_name, at::Tensor& key) {
  int64_t* out = key.data_ptr<int64_t>();
  const auto high = [counts](int64_t i) {
    return static_cast<int64_t>(VoteCounter::kMaxClients - counts[i]) << 32;
  };
  if (options.tie_break == TieBreak::kSmallerMagnitude) {
    // |W| in float32 is >= 0, so its IEEE bit pattern orders like the value (NaN last).
    const at::Tensor magnitude = MagnitudeScore(weight).cpu().contiguous();
    const float* mag = magnitude.data_ptr<float>();
    at::parallel_for(0, votes.numel(), kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        uint32_t bits;
        std::memcpy(&bits, &mag[i], sizeof(bits));
        out[i] = high(i) | bits;
      }
    });
  } else if (options.tie_break == TieBreak::kIndex) {
    // The priority is the flat index, which fits its 32 bits for matrices below 2^32 weights
    // (the largest LLaMA-family matrix, 70B's MLP, has 235 M).
    at::parallel_for(0, votes.numel(), kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) out[i] = high(i) | (static_cast<int64_t>(i) & 0xffffffff);
    });
  } else {
    const uint64_t stream = SplitMix64Mix(options.seed ^ SplitMix64Mix(Fnv1a64(tensor_name)));
    at::parallel_for(0, votes.numel(), kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const uint64_t r = SplitMix64Mix(stream + uint64_t(i + 1) * kSplitMix64Increment);
        out[i] = high(i) | static_cast<int64_t>(r >> 32);
      }
    });
  }
}

// key[i] = (kMaxClients - votes[i]) << 32 | priority[i], so the lowest keys are the most-voted
// weights and, among equal votes, the lowest tie-break priority (a value < 2^32).
at::Tensor BuildKey(const VoteCounter& votes, const at::Tensor& weight,
                    const AggregationOptions& options, std::string_view tensor_name) {
  at::Tensor key = at::empty(votes.shape(), at::TensorOptions().dtype(at::kLong));
  votes.VisitCounts([&](const auto* counts) { FillKey(votes, counts, weight, options, tensor_name, key); });
  return key;
}

// kSpread8[b]: byte j is bit j of b. Added to 8 byte-wide counters at once (no carry can
// cross a byte: a counter never exceeds 255).
constexpr std::array<uint64_t, 256> MakeSpread8() {
  std::array<uint64_t, 256> table{};
  for (int b = 0; b < 256; ++b) {
    for (int j = 0; j < 8; ++j) table[b] |= static_cast<uint64_t>((b >> j) & 1) << (8 * j);
  }
  return table;
}
constexpr std::array<uint64_t, 256> kSpread8 = MakeSpread8();

// kSpread16[n]: 16-bit lane j is bit j of the nibble n, for 4 uint16 counters at once.
constexpr std::array<uint64_t, 16> MakeSpread16() {
  std::array<uint64_t, 16> table{};
  for (int n = 0; n < 16; ++n) {
    for (int j = 0; j < 4; ++j) table[n] |= static_cast<uint64_t>((n >> j) & 1) << (16 * j);
  }
  return table;
}
constexpr std::array<uint64_t, 16> kSpread16 = MakeSpread16();

// The portable kernels: mask bytes [begin, end) into counters 8 * begin onwards.
void AddBytesScalar(const uint8_t* bits, int64_t begin, int64_t end, uint8_t* counts) {
  for (int64_t b = begin; b < end; ++b) {
    uint64_t lanes;
    std::memcpy(&lanes, counts + 8 * b, 8);
    lanes += kSpread8[bits[b]];
    std::memcpy(counts + 8 * b, &lanes, 8);
  }
}

void AddBytesScalar(const uint8_t* bits, int64_t begin, int64_t end, uint16_t* counts) {
  for (int64_t b = begin; b < end; ++b) {
    uint64_t lanes[2];
    std::memcpy(lanes, counts + 8 * b, 16);
    lanes[0] += kSpread16[bits[b] & 15];
    lanes[1] += kSpread16[bits[b] >> 4];
    std::memcpy(counts + 8 * b, lanes, 16);
  }
}

#ifdef FEDPRLLM_VOTE_AVX2
// AVX2 kernels: each mask bit is spread to a whole counter lane (byte or 16-bit), turned into
// all-ones (-1) where the bit is set by a compare, and subtracted. They process whole groups
// (4 mask bytes = 32 byte counters, 2 mask bytes = 16 uint16 counters) of [begin, end) and
// return the first byte they did not process; the caller finishes with the scalar kernel.
__attribute__((target("avx2"))) int64_t AddBytesAvx2(const uint8_t* bits, int64_t begin, int64_t end,
                                                     uint8_t* counts) {
  // Lane 0 of the 256-bit vector takes mask bytes 0 and 1, lane 1 bytes 2 and 3 (vpshufb
  // shuffles within a 128-bit lane, and the broadcast word holds all four in each).
  const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,  //
                                          2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i bit = _mm256_setr_epi8(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128,  //
                                       1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128);
  int64_t b = begin;
  for (; b + 4 <= end; b += 4) {
    int32_t word;
    std::memcpy(&word, bits + b, 4);
    const __m256i x = _mm256_shuffle_epi8(_mm256_set1_epi32(word), spread);
    const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(x, bit), bit);
    __m256i* at = reinterpret_cast<__m256i*>(counts + 8 * b);
    _mm256_storeu_si256(at, _mm256_sub_epi8(_mm256_loadu_si256(at), set));
  }
  return b;
}

__attribute__((target("avx2"))) int64_t AddBytesAvx2(const uint8_t* bits, int64_t begin, int64_t end,
                                                     uint16_t* counts) {
  const __m256i bit = _mm256_setr_epi16(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384,
                                        static_cast<int16_t>(0x8000));
  int64_t b = begin;
  for (; b + 2 <= end; b += 2) {
    int16_t half;
    std::memcpy(&half, bits + b, 2);
    const __m256i set = _mm256_cmpeq_epi16(_mm256_and_si256(_mm256_set1_epi16(half), bit), bit);
    __m256i* at = reinterpret_cast<__m256i*>(counts + 8 * b);
    _mm256_storeu_si256(at, _mm256_sub_epi16(_mm256_loadu_si256(at), set));
  }
  return b;
}

bool CpuHasAvx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}
#endif

template <typename Count>
void AddBitsImpl(const uint8_t* bits, int64_t n, Count* counts, bool simd) {
  const int64_t full_bytes = n / 8;
  at::parallel_for(0, full_bytes, kGrain, [&](int64_t begin, int64_t end) {
    int64_t b = begin;
#ifdef FEDPRLLM_VOTE_AVX2
    if (simd && CpuHasAvx2()) b = AddBytesAvx2(bits, begin, end, counts);
#else
    (void)simd;
#endif
    AddBytesScalar(bits, b, end, counts);
  });
  for (int64_t i = full_bytes * 8; i < n; ++i) counts[i] += (bits[i >> 3] >> (i & 7)) & 1;
}

}  // namespace

namespace vote_internal {

void AddBits(const uint8_t* bits, int64_t n, uint8_t* counts, bool simd) { AddBitsImpl(bits, n, counts, simd); }
void AddBits(const uint8_t* bits, int64_t n, uint16_t* counts, bool simd) { AddBitsImpl(bits, n, counts, simd); }

}  // namespace vote_internal

VoteCounter::VoteCounter(std::vector<int64_t> shape, int max_clients)
    : shape_(std::move(shape)),
      numel_(NumElements(shape_)),
      max_clients_(std::clamp(max_clients, 1, kMaxClients)),
      narrow_(max_clients_ <= 255) {
  if (narrow_) {
    narrow_counts_.assign(numel_, 0);
  } else {
    wide_counts_.assign(numel_, 0);
  }
}

absl::Status VoteCounter::Add(const PackedMask& mask) {
  if (mask.shape() != shape_) {
    return absl::InvalidArgumentError(absl::StrCat("mask shape ", ShapeToString(mask.shape()),
                                                   " does not match tensor shape ",
                                                   ShapeToString(shape_)));
  }
  const int64_t n = numel();
  if (static_cast<int64_t>(mask.bytes().size()) != (n + 7) / 8) {
    return absl::InvalidArgumentError(
        absl::StrCat("mask has ", mask.bytes().size(), " bytes, expected ", (n + 7) / 8));
  }
  if (num_clients_ >= max_clients_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("vote counter already holds the maximum of ", max_clients_, " clients"));
  }
  if (narrow_) {
    vote_internal::AddBits(mask.bytes().data(), n, narrow_counts_.data(), /*simd=*/true);
  } else {
    vote_internal::AddBits(mask.bytes().data(), n, wide_counts_.data(), /*simd=*/true);
  }
  ++num_clients_;
  return absl::OkStatus();
}

at::Tensor VoteCounter::votes() const {
  at::Tensor out = at::empty(shape_, at::TensorOptions().dtype(at::kInt));
  VisitCounts([&](const auto* counts) { std::copy(counts, counts + numel_, out.data_ptr<int32_t>()); });
  return out;
}

absl::StatusOr<TieBreak> ParseTieBreak(std::string_view text) {
  if (text == "magnitude") return TieBreak::kSmallerMagnitude;
  if (text == "random") return TieBreak::kRandom;
  if (text == "index") return TieBreak::kIndex;
  return absl::InvalidArgumentError(
      absl::StrCat("tie break must be magnitude, random or index; got '", std::string(text), "'"));
}

std::string_view TieBreakName(TieBreak tie_break) {
  switch (tie_break) {
    case TieBreak::kSmallerMagnitude: return "magnitude";
    case TieBreak::kRandom: return "random";
    case TieBreak::kIndex: return "index";
  }
  return "?";
}

absl::StatusOr<PackedMask> ChooseMask(const VoteCounter& votes, const at::Tensor& weight,
                                      const AggregationOptions& options,
                                      std::string_view tensor_name) {
  const std::string name(tensor_name);  // for StrCat: absl::string_view != std::string_view here
  if (absl::Status s = options.pattern.Validate(); !s.ok()) return s;
  if (weight.sizes().vec() != votes.shape()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", name, "': weight shape ", ShapeToString(weight.sizes().vec()),
                     " does not match vote shape ", ShapeToString(votes.shape())));
  }
  if (absl::Status s = options.pattern.CheckShape(votes.shape()); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': ", s.message()));
  }
  if (!options.pattern.structured() && options.group != ComparisonGroup::kLayer &&
      weight.dim() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", name, "': ", std::string(ComparisonGroupName(options.group)),
                     " groups need a 2-D weight, got ", ShapeToString(votes.shape())));
  }
  try {
    const at::Tensor key = BuildKey(votes, weight, options, tensor_name);
    return ToPackedMask(SelectLowest(key, options.group, options.pattern));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("choosing the mask of tensor '", name,
                                            "' failed: ", e.what_without_backtrace()));
  }
}

at::Tensor ApplyDecision(const at::Tensor& weight, const PackedMask& mask,
                         const VoteCounter* votes_for_scaling) {
  TORCH_CHECK(weight.sizes().vec() == mask.shape(), "ApplyDecision: weight ", weight.sizes(),
              " does not match mask ", ShapeToString(mask.shape()));
  if (votes_for_scaling == nullptr || votes_for_scaling->num_clients() == 0) {
    return weight.masked_fill(FromPackedMask(mask).to(weight.device()), 0);
  }
  TORCH_CHECK(votes_for_scaling->shape() == mask.shape(), "ApplyDecision: vote shape ",
              ShapeToString(votes_for_scaling->shape()), " does not match mask");
  // One pass: out = pruned ? +0 : T(w * ((clients - votes) / clients)), the scale in float32.
  const at::Tensor in = weight.cpu().contiguous();
  at::Tensor out = at::empty_like(in);
  const int clients = votes_for_scaling->num_clients();
  std::vector<float> scale_of(clients + 1);  // indexed by vote count
  for (int v = 0; v <= clients; ++v) {
    scale_of[v] = static_cast<float>(clients - v) / static_cast<float>(clients);
  }
  const uint8_t* bits = mask.bytes().data();
  votes_for_scaling->VisitCounts([&](const auto* counts) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(), "ApplyDecision", [&] {
      using Acc = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
      const scalar_t* w = in.data_ptr<scalar_t>();
      scalar_t* o = out.data_ptr<scalar_t>();
      at::parallel_for(0, in.numel(), kGrain, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const float scale = scale_of[counts[i]];
          o[i] = ((bits[i >> 3] >> (i & 7)) & 1) ? scalar_t(0)
                                                 : scalar_t(static_cast<Acc>(w[i]) * Acc(scale));
        }
      });
    });
  });
  return out.to(weight.device());
}

at::Tensor VoteHistogram(const VoteCounter& votes) {
  return at::bincount(votes.votes().view({-1}), {}, votes.num_clients() + 1);
}

}  // namespace fedprllm
