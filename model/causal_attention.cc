// CausalAttention: fused AVX-512 and AVX2 kernels for small heads on the CPU, and blocked
// LibTorch operations everywhere else.
#include "model/causal_attention.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define FEDPRLLM_ATTENTION_AVX2 1
#endif

namespace fedprllm {
namespace {

// Query positions per block of CausalAttention. 32 was fastest on stories260K (head_dim 8)
// among 16, 32, 64 and 128 at one thread: small enough that a block's scores stay in cache
// and little of the masked half is computed, large enough that call overhead stays small.
constexpr int64_t kAttentionBlock = 32;

// The additive mask of a diagonal block: [kAttentionBlock * group, kAttentionBlock], 0 where
// row s * group + g may see key column c (c <= s), -inf elsewhere. Cached per thread for the
// last group, dtype and device; callers only read it.
const at::Tensor& DiagonalBlockMask(int64_t group, at::ScalarType dtype, const at::Device& device) {
  thread_local at::Tensor mask;
  if (!mask.defined() || mask.size(0) != kAttentionBlock * group || mask.scalar_type() != dtype ||
      mask.device() != device) {
    mask = at::full({kAttentionBlock, kAttentionBlock}, -std::numeric_limits<float>::infinity(),
                    at::TensorOptions().dtype(dtype).device(device))
               .triu_(1)
               .repeat_interleave(group, 0)
               .contiguous();
  }
  return mask;
}

}  // namespace

// CausalAttention with LibTorch operations, in blocks of kAttentionBlock query positions: query block [s0, s0 + n) reads keys
// [0, past + s0 + n): scores by one bmm, scaled, the diagonal block masked, an exact softmax
// over that row in float32, and one bmm with v. Every score and probability a query can see
// is the one the full masked softmax gives (the masked ones are exp(-inf) = 0 there), so the
// output is the full computation's up to float rounding.
at::Tensor BlockedCausalAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t past, int64_t group,
                           double scale) {
  const int64_t seq = q.size(1) / group;
  at::Tensor out = at::empty_like(q);
  const at::Tensor keys_t = k.transpose(1, 2);  // [bk, head_dim, past + seq]
  const at::Tensor& diagonal = DiagonalBlockMask(group, q.scalar_type(), q.device());
  for (int64_t s0 = 0; s0 < seq; s0 += kAttentionBlock) {
    const int64_t n = std::min(kAttentionBlock, seq - s0), visible = past + s0 + n;
    // The scale is applied as baddbmm's alpha, as in the full computation. Zeros, not empty:
    // ATen's small-matrix kernel reads the input even with beta 0 (0 * NaN is NaN).
    at::Tensor scores = at::zeros({q.size(0), n * group, visible}, q.options());
    scores.baddbmm_(q.narrow(1, s0 * group, n * group), keys_t.narrow(2, 0, visible), /*beta=*/0.0, /*alpha=*/scale);
    scores.narrow(2, past + s0, n).add_(diagonal.narrow(0, 0, n * group).narrow(1, 0, n));
    const at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
    at::Tensor rows = out.narrow(1, s0 * group, n * group);
    at::bmm_out(rows, probs, v.narrow(1, 0, visible));
  }
  return out;
}


namespace {

#ifdef FEDPRLLM_ATTENTION_AVX2
// exp(x) for 8 floats (Cephes' expf: range reduction by ln 2 in two parts, a degree-5
// polynomial, 2^n by exponent bits): within 2 ulp of expf for x in [-87, 88]; 0 below.
__attribute__((target("avx2,fma"))) inline __m256 Exp8(__m256 x) {
  x = _mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f));
  x = _mm256_max_ps(x, _mm256_set1_ps(-88.3762626647949f));
  __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
  fx = _mm256_floor_ps(fx);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  const __m256i exponent = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(exponent));
}

__attribute__((target("avx2,fma"))) inline float HorizontalMax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

__attribute__((target("avx2,fma"))) inline float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// Query rows q[0 .. R) (each D = kVectors * 8 floats, R rows apart by D) that all see keys
// [0, visible): writes their outputs to out[0 .. R). keys_t is [D][padded] (k transposed, zero
// past the keys), v is [keys][D], scores is scratch of R * padded floats. Rows done together
// share every load of keys_t and v.
template <int kVectors, int R>
__attribute__((target("avx2,fma"))) void FusedRows(const float* q, const float* keys_t, const float* v, float* out,
                                                   int64_t visible, int64_t padded, float scale, float* scores) {
  constexpr int64_t D = kVectors * 8;
  const __m256 minus_inf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const int64_t chunks = (visible + 7) / 8;
  // Scores, scaled, with the lanes past `visible` in the last chunk set to -inf.
  __m256 best[R];
  for (int r = 0; r < R; ++r) best[r] = minus_inf;
  for (int64_t c = 0; c < chunks; ++c) {
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t d = 0; d < D; ++d) {
      const __m256 keys = _mm256_loadu_ps(keys_t + d * padded + 8 * c);
      for (int r = 0; r < R; ++r) acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(q[r * D + d]), keys, acc[r]);
    }
    const bool partial = 8 * c + 8 > visible;
    const __m256 valid =
        _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(visible - 8 * c)), lane));
    for (int r = 0; r < R; ++r) {
      acc[r] = _mm256_mul_ps(acc[r], _mm256_set1_ps(scale));
      if (partial) acc[r] = _mm256_blendv_ps(minus_inf, acc[r], valid);
      _mm256_storeu_ps(scores + r * padded + 8 * c, acc[r]);
      best[r] = _mm256_max_ps(best[r], acc[r]);
    }
  }
  // exp(score - max); the -inf lanes give exactly 0.
  __m256 inverse[R];
  for (int r = 0; r < R; ++r) {
    float* row = scores + r * padded;
    const __m256 max = _mm256_set1_ps(HorizontalMax(best[r]));
    __m256 sum = _mm256_setzero_ps();
    for (int64_t c = 0; c < chunks; ++c) {
      const __m256 s = _mm256_loadu_ps(row + 8 * c);
      __m256 e = Exp8(_mm256_sub_ps(s, max));
      e = _mm256_blendv_ps(e, _mm256_setzero_ps(), _mm256_cmp_ps(s, minus_inf, _CMP_EQ_OQ));
      _mm256_storeu_ps(row + 8 * c, e);
      sum = _mm256_add_ps(sum, e);
    }
    inverse[r] = _mm256_set1_ps(1.0f / HorizontalSum(sum));
  }
  // out = sum_j p_j v_j, with p_j = e_j / sum as the softmax gives it. Four partial sums per
  // row (keys j mod 4) keep several FMA chains in flight.
  __m256 acc[R][4][kVectors];
  for (int r = 0; r < R; ++r) {
    for (int a = 0; a < 4; ++a) {
      for (int i = 0; i < kVectors; ++i) acc[r][a][i] = _mm256_setzero_ps();
    }
  }
  int64_t j = 0;
  for (; j + 4 <= visible; j += 4) {
    for (int a = 0; a < 4; ++a) {
      for (int i = 0; i < kVectors; ++i) {
        const __m256 values = _mm256_loadu_ps(v + (j + a) * D + 8 * i);
        for (int r = 0; r < R; ++r) {
          acc[r][a][i] = _mm256_fmadd_ps(_mm256_set1_ps(scores[r * padded + j + a]), values, acc[r][a][i]);
        }
      }
    }
  }
  for (; j < visible; ++j) {
    for (int i = 0; i < kVectors; ++i) {
      const __m256 values = _mm256_loadu_ps(v + j * D + 8 * i);
      for (int r = 0; r < R; ++r) {
        acc[r][0][i] = _mm256_fmadd_ps(_mm256_set1_ps(scores[r * padded + j]), values, acc[r][0][i]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int i = 0; i < kVectors; ++i) {
      const __m256 total = _mm256_add_ps(_mm256_add_ps(acc[r][0][i], acc[r][1][i]),
                                         _mm256_add_ps(acc[r][2][i], acc[r][3][i]));
      _mm256_storeu_ps(out + r * D + 8 * i, _mm256_mul_ps(total, inverse[r]));
    }
  }
}

// The AVX-512 row kernel: the same computation as FusedRows, 16 keys per vector.

// Exp8 for 16 floats.
__attribute__((target("avx512f,avx2,fma"))) inline __m512 Exp16(__m512 x) {
  x = _mm512_min_ps(x, _mm512_set1_ps(88.3762626647949f));
  x = _mm512_max_ps(x, _mm512_set1_ps(-88.3762626647949f));
  __m512 fx = _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), _mm512_set1_ps(0.5f));
  fx = _mm512_roundscale_ps(fx, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
  x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), x);
  __m512 y = _mm512_set1_ps(1.9875691500e-4f);
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.3981999507e-3f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(8.3334519073e-3f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(4.1665795894e-2f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.6666665459e-1f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(5.0000001201e-1f));
  y = _mm512_fmadd_ps(y, _mm512_mul_ps(x, x), _mm512_add_ps(x, _mm512_set1_ps(1.0f)));
  const __m512i exponent =
      _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvttps_epi32(fx), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(y, _mm512_castsi512_ps(exponent));
}

// FusedRows with 16 lanes, for D = 8 or a multiple of 16 up to 32. keys_t is [D][padded] with
// padded a multiple of 16. For D = 8 one vector holds two keys' values, so the weighted sum
// takes two keys per FMA and adds the halves at the end.
template <int D, int R>
__attribute__((target("avx512f,avx2,fma"))) void FusedRows512(const float* q, const float* keys_t, const float* v, float* out,
                                                     int64_t visible, int64_t padded, float scale, float* scores) {
  static_assert(D == 8 || D % 16 == 0, "D is 8 or a multiple of 16");
  const __m512 minus_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  const int64_t chunks = (visible + 15) / 16;
  __m512 best[R];
  for (int r = 0; r < R; ++r) best[r] = minus_inf;
  for (int64_t c = 0; c < chunks; ++c) {
    __m512 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
    for (int64_t d = 0; d < D; ++d) {
      const __m512 keys = _mm512_loadu_ps(keys_t + d * padded + 16 * c);
      for (int r = 0; r < R; ++r) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(q[r * D + d]), keys, acc[r]);
    }
    const int64_t left = visible - 16 * c;
    const __mmask16 valid = left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1);
    for (int r = 0; r < R; ++r) {
      acc[r] = _mm512_mask_mul_ps(minus_inf, valid, acc[r], _mm512_set1_ps(scale));
      _mm512_storeu_ps(scores + r * padded + 16 * c, acc[r]);
      best[r] = _mm512_max_ps(best[r], acc[r]);
    }
  }
  // exp(score - max), exactly 0 in the masked lanes.
  float inverse[R];
  for (int r = 0; r < R; ++r) {
    float* row = scores + r * padded;
    const __m512 max = _mm512_set1_ps(_mm512_reduce_max_ps(best[r]));
    __m512 sum = _mm512_setzero_ps();
    for (int64_t c = 0; c < chunks; ++c) {
      const __m512 s = _mm512_loadu_ps(row + 16 * c);
      const __m512 e = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(s, minus_inf, _CMP_NEQ_OQ), Exp16(_mm512_sub_ps(s, max)));
      _mm512_storeu_ps(row + 16 * c, e);
      sum = _mm512_add_ps(sum, e);
    }
    inverse[r] = 1.0f / _mm512_reduce_add_ps(sum);
  }
  if constexpr (D == 8) {
    // acc lanes 0-7 sum the even keys' v, lanes 8-15 the odd keys'. Pair p of 16 scores is
    // spread to [s_2p x 8, s_2p+1 x 8] by one permute.
    __m512 acc[R][2];
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    const __m512i spread = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    int64_t j = 0;
    for (; j + 16 <= visible; j += 16) {
      __m512 weights[R];
      for (int r = 0; r < R; ++r) weights[r] = _mm512_loadu_ps(scores + r * padded + j);
      for (int p = 0; p < 8; ++p) {
        const __m512 values = _mm512_loadu_ps(v + (j + 2 * p) * 8);
        const __m512i index = _mm512_add_epi32(spread, _mm512_set1_epi32(2 * p));
        for (int r = 0; r < R; ++r) {
          acc[r][p & 1] = _mm512_fmadd_ps(_mm512_permutexvar_ps(index, weights[r]), values, acc[r][p & 1]);
        }
      }
    }
    for (; j + 2 <= visible; j += 2) {
      const __m512 values = _mm512_loadu_ps(v + j * 8);
      for (int r = 0; r < R; ++r) {
        const __m512 pair = _mm512_permutexvar_ps(
            spread, _mm512_castps128_ps512(_mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(scores + r * padded + j)))));
        acc[r][0] = _mm512_fmadd_ps(pair, values, acc[r][0]);
      }
    }
    for (int r = 0; r < R; ++r) {
      const __m512 both = _mm512_add_ps(acc[r][0], acc[r][1]);
      __m256 total = _mm256_add_ps(_mm512_castps512_ps256(both), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(both), 1)));
      if (j < visible) {
        total = _mm256_fmadd_ps(_mm256_set1_ps(scores[r * padded + j]), _mm256_loadu_ps(v + j * 8), total);
      }
      _mm256_storeu_ps(out + r * D, _mm256_mul_ps(total, _mm256_set1_ps(inverse[r])));
    }
  } else {
    constexpr int kVectors = D / 16;
    __m512 acc[R][2][kVectors];
    for (int r = 0; r < R; ++r) {
      for (int a = 0; a < 2; ++a) {
        for (int i = 0; i < kVectors; ++i) acc[r][a][i] = _mm512_setzero_ps();
      }
    }
    int64_t j = 0;
    for (; j + 2 <= visible; j += 2) {
      for (int a = 0; a < 2; ++a) {
        for (int i = 0; i < kVectors; ++i) {
          const __m512 values = _mm512_loadu_ps(v + (j + a) * D + 16 * i);
          for (int r = 0; r < R; ++r) {
            acc[r][a][i] = _mm512_fmadd_ps(_mm512_set1_ps(scores[r * padded + j + a]), values, acc[r][a][i]);
          }
        }
      }
    }
    for (; j < visible; ++j) {
      for (int i = 0; i < kVectors; ++i) {
        const __m512 values = _mm512_loadu_ps(v + j * D + 16 * i);
        for (int r = 0; r < R; ++r) {
          acc[r][0][i] = _mm512_fmadd_ps(_mm512_set1_ps(scores[r * padded + j]), values, acc[r][0][i]);
        }
      }
    }
    for (int r = 0; r < R; ++r) {
      for (int i = 0; i < kVectors; ++i) {
        _mm512_storeu_ps(out + r * D + 16 * i,
                         _mm512_mul_ps(_mm512_add_ps(acc[r][0][i], acc[r][1][i]), _mm512_set1_ps(inverse[r])));
      }
    }
  }
}

// A row kernel: FusedRows or FusedRows512 for a head size and a row count.
using FusedRowsFn = void (*)(const float* q, const float* keys_t, const float* v, float* out, int64_t visible,
                             int64_t padded, float scale, float* scores);

// One batch entry: q [seq * group, D], k and v [total, D] (total = past + seq), out like q.
// keys_t and scores are scratch of D * padded and 2 * padded floats, padded = total rounded up
// to kLanes, the row kernels' keys per vector. The group rows of one position see the same
// keys and are done two at a time (TwoRows), an odd last one alone (OneRow).
template <int64_t D, int64_t kLanes, FusedRowsFn TwoRows, FusedRowsFn OneRow>
void FusedEntry(const float* q, const float* k, const float* v, float* out, int64_t seq, int64_t past,
                int64_t group, float scale, float* keys_t, float* scores) {
  const int64_t total = past + seq, padded = (total + kLanes - 1) / kLanes * kLanes;
  // keys_t[d * padded + j] = k[j][d], zero past the end.
  for (int64_t d = 0; d < D; ++d) {
    float* row = keys_t + d * padded;
    for (int64_t j = 0; j < total; ++j) row[j] = k[j * D + d];
    for (int64_t j = total; j < padded; ++j) row[j] = 0.0f;
  }
  for (int64_t s = 0; s < seq; ++s) {
    const int64_t visible = past + s + 1;  // keys 0 .. position
    int64_t g = 0;
    for (; g + 2 <= group; g += 2) {
      const int64_t r = s * group + g;
      TwoRows(q + r * D, keys_t, v, out + r * D, visible, padded, scale, scores);
    }
    if (g < group) {
      const int64_t r = s * group + g;
      OneRow(q + r * D, keys_t, v, out + r * D, visible, padded, scale, scores);
    }
  }
}

template <int kVectors>
constexpr auto kAvx2Entry = FusedEntry<kVectors * 8, 8, FusedRows<kVectors, 2>, FusedRows<kVectors, 1>>;
template <int D>
constexpr auto kAvx512Entry = FusedEntry<D, 16, FusedRows512<D, 2>, FusedRows512<D, 1>>;

bool CpuRuns(AttentionKernel kernel) {
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  switch (kernel) {
    case AttentionKernel::kAvx2: return avx2;
    case AttentionKernel::kAvx512: return avx512;
    default: return false;
  }
}

// The head sizes each fused kernel handles.
bool KernelFits(AttentionKernel kernel, int64_t dim) {
  if (kernel == AttentionKernel::kAvx512) return dim == 8 || dim == 16 || dim == 32;
  return kernel == AttentionKernel::kAvx2 && dim % 8 == 0 && dim <= 32;
}

// `kernel` over every batch entry, or an undefined tensor when it does not apply.
at::Tensor FusedCausalAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t past,
                                int64_t group, double scale, AttentionKernel kernel) {
  const int64_t dim = q.size(2);
  if (!q.device().is_cpu() || q.scalar_type() != at::kFloat || !KernelFits(kernel, dim) || !CpuRuns(kernel)) {
    return at::Tensor();
  }
  const bool wide = kernel == AttentionKernel::kAvx512;
  const at::Tensor qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
  at::Tensor out = at::empty_like(qc);
  const int64_t entries = q.size(0), seq = q.size(1) / group, total = k.size(1);
  const int64_t lanes = wide ? 16 : 8, padded = (total + lanes - 1) / lanes * lanes;
  const float* qp = qc.data_ptr<float>();
  const float* kp = kc.data_ptr<float>();
  const float* vp = vc.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, entries, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> keys_t(dim * padded), scores(2 * padded);
    for (int64_t e = begin; e < end; ++e) {
      const float* qe = qp + e * seq * group * dim;
      const float* ke = kp + e * total * dim;
      const float* ve = vp + e * total * dim;
      float* oe = op + e * seq * group * dim;
      const float s = static_cast<float>(scale);
      float* kt = keys_t.data();
      float* sc = scores.data();
      if (wide) {
        switch (dim) {
          case 8: kAvx512Entry<8>(qe, ke, ve, oe, seq, past, group, s, kt, sc); break;
          case 16: kAvx512Entry<16>(qe, ke, ve, oe, seq, past, group, s, kt, sc); break;
          default: kAvx512Entry<32>(qe, ke, ve, oe, seq, past, group, s, kt, sc); break;
        }
        continue;
      }
      switch (dim / 8) {
        case 1: kAvx2Entry<1>(qe, ke, ve, oe, seq, past, group, s, kt, sc); break;
        case 2: kAvx2Entry<2>(qe, ke, ve, oe, seq, past, group, s, kt, sc); break;
        case 3: kAvx2Entry<3>(qe, ke, ve, oe, seq, past, group, s, kt, sc); break;
        default: kAvx2Entry<4>(qe, ke, ve, oe, seq, past, group, s, kt, sc); break;
      }
    }
  });
  return out;
}
#else
at::Tensor FusedCausalAttention(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, int64_t, double,
                                AttentionKernel) {
  return at::Tensor();
}
#endif

}  // namespace

at::Tensor CausalAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t past, int64_t group,
                           double scale) {
  TORCH_CHECK(q.dim() == 3 && k.dim() == 3 && v.dim() == 3 && q.size(0) == k.size(0) && k.sizes() == v.sizes() &&
                  q.size(2) == k.size(2) && group >= 1 && q.size(1) % group == 0 &&
                  k.size(1) == past + q.size(1) / group,
              "CausalAttention: q ", q.sizes(), ", k ", k.sizes(), ", v ", v.sizes(), ", past ", past, ", group ",
              group, " do not fit together");
  for (const AttentionKernel kernel : {AttentionKernel::kAvx512, AttentionKernel::kAvx2}) {
    at::Tensor fused = FusedCausalAttention(q, k, v, past, group, scale, kernel);
    if (fused.defined()) return fused;
  }
  return BlockedCausalAttention(q, k, v, past, group, scale);
}

at::Tensor FusedCausalAttentionWith(AttentionKernel kernel, const at::Tensor& q, const at::Tensor& k,
                                    const at::Tensor& v, int64_t past, int64_t group, double scale) {
  return FusedCausalAttention(q, k, v, past, group, scale, kernel);
}

}  // namespace fedprllm
