// Tests for CausalAttention: each fused CPU kernel (AVX2, AVX-512) and the blocked LibTorch path against the full
// masked computation (one baddbmm over every key with -inf above the diagonal, softmax, bmm), for
// head sizes inside and outside the kernel's range, grouped queries, a KV-cache prefix and
// sequence lengths that end mid-block and mid-vector.
#include "model/causal_attention.h"

#include <cmath>
#include <limits>
#include <tuple>

#include <gtest/gtest.h>

namespace fedprllm {
namespace {

// The computation CausalAttention replaces, written out as LlamaModel did before it.
at::Tensor FullMaskedAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t past,
                               int64_t group, double scale) {
  const int64_t seq = q.size(1) / group;
  // Rows s * group + g see keys 0 .. past + s.
  const at::Tensor mask = at::full({seq, past + seq}, -std::numeric_limits<float>::infinity())
                              .triu_(past + 1)
                              .repeat_interleave(group, 0);
  const at::Tensor scores = at::baddbmm(mask, q, k.transpose(1, 2), 1.0, scale);
  return at::bmm(at::softmax(scores, -1, at::kFloat), v);
}

class CausalAttentionTest : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t, int64_t>> {};

TEST_P(CausalAttentionTest, MatchesTheFullMaskedComputation) {
  const auto [head_dim, group, past, seq] = GetParam();
  at::manual_seed(head_dim * 1000 + group * 100 + past * 10 + seq);
  const int64_t entries = 3;
  const at::Tensor q = at::randn({entries, seq * group, head_dim});
  const at::Tensor k = at::randn({entries, past + seq, head_dim});
  const at::Tensor v = at::randn({entries, past + seq, head_dim});
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  const at::Tensor expected = FullMaskedAttention(q, k, v, past, group, scale);
  const at::Tensor chosen = CausalAttention(q, k, v, past, group, scale);
  const at::Tensor blocked = BlockedCausalAttention(q, k, v, past, group, scale);
  ASSERT_EQ(chosen.sizes(), expected.sizes());
  ASSERT_EQ(blocked.sizes(), expected.sizes());
  // Outputs are convex combinations of v's rows (|v| up to ~4): 1e-5 is float rounding, and a
  // key seen or missed by one position would differ by orders of magnitude more.
  EXPECT_LT((chosen - expected).abs().max().item<double>(), 1e-5);
  EXPECT_LT((blocked - expected).abs().max().item<double>(), 1e-5);
  // Each fused kernel on its own, where it applies on this CPU.
  for (const AttentionKernel kernel : {AttentionKernel::kAvx2, AttentionKernel::kAvx512}) {
    const at::Tensor fused = FusedCausalAttentionWith(kernel, q, k, v, past, group, scale);
    if (!fused.defined()) continue;
    SCOPED_TRACE(kernel == AttentionKernel::kAvx2 ? "avx2" : "avx512");
    ASSERT_EQ(fused.sizes(), expected.sizes());
    EXPECT_LT((fused - expected).abs().max().item<double>(), 1e-5);
  }
}

// The head sizes each kernel handles: a kernel this CPU runs answers for them and declines the
// rest (AVX2 and FMA are on every x86-64 CPU this project targets; AVX-512F is checked).
TEST(CausalAttentionTest, EachKernelHandlesItsHeadSizes) {
  for (const int64_t head_dim : {4, 8, 16, 24, 32, 64}) {
    const at::Tensor q = at::randn({1, 4, head_dim}), k = at::randn({1, 4, head_dim});
    const bool avx2 = FusedCausalAttentionWith(AttentionKernel::kAvx2, q, k, k, 0, 1, 1.0).defined();
    EXPECT_EQ(avx2, head_dim % 8 == 0 && head_dim <= 32) << head_dim;
    if (__builtin_cpu_supports("avx512f")) {
      const bool avx512 = FusedCausalAttentionWith(AttentionKernel::kAvx512, q, k, k, 0, 1, 1.0).defined();
      EXPECT_EQ(avx512, head_dim == 8 || head_dim == 16 || head_dim == 32) << head_dim;
    }
  }
  EXPECT_FALSE(FusedCausalAttentionWith(AttentionKernel::kAvx2, at::randn({1, 4, 8}, at::kDouble),
                                        at::randn({1, 4, 8}, at::kDouble), at::randn({1, 4, 8}, at::kDouble), 0, 1,
                                        1.0)
                   .defined());
}

INSTANTIATE_TEST_SUITE_P(Shapes, CausalAttentionTest,
                         ::testing::Combine(::testing::Values(4, 8, 16, 24, 32, 64),  // head_dim
                                            ::testing::Values(1, 2, 4),               // group
                                            ::testing::Values(0, 5),                  // past
                                            ::testing::Values(1, 7, 33, 70)));        // seq

TEST(CausalAttentionTest, RefusesShapesThatDoNotFit) {
  const at::Tensor q = at::randn({2, 8, 8}), k = at::randn({2, 4, 8});
  EXPECT_THROW(CausalAttention(q, k, k, /*past=*/1, /*group=*/2, 1.0), c10::Error);  // 4 != 1 + 8 / 2
  EXPECT_NO_THROW(CausalAttention(q, k, k, /*past=*/0, /*group=*/2, 1.0));
}

}  // namespace
}  // namespace fedprllm
