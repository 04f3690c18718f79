// Tests for RotateToHeadMajor: its one CPU pass against the tensor expression it replaces
// (x * cos + rotate_half(x) * sin, then the key/value-head layout), value for value.
#include "model/rotary_embedding.h"

#include <gtest/gtest.h>

namespace fedprllm {
namespace {

at::Tensor Expression(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, int64_t kv_heads) {
  const int64_t batch = x.size(0), seq = x.size(1), heads = x.size(2), dim = x.size(3), half = dim / 2;
  const at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return (x * cos + rotated * sin)
      .view({batch, seq, kv_heads, heads / kv_heads, dim})
      .permute({0, 2, 1, 3, 4})
      .reshape({batch * kv_heads, seq * (heads / kv_heads), dim});
}

TEST(RotateToHeadMajorTest, EqualsTheTensorExpressionExactly) {
  at::manual_seed(7);
  for (const int64_t kv_heads : {1, 2, 4}) {
    for (const int64_t dim : {8, 16, 6}) {
      const int64_t batch = 3, seq = 11, heads = 4;
      // q as the fused q/k/v GEMM leaves it: a column slice of a wider row, so not contiguous.
      const at::Tensor fused = at::randn({batch, seq, heads * dim + 2 * kv_heads * dim});
      const at::Tensor x = fused.narrow(-1, 0, heads * dim).view({batch, seq, heads, dim});
      const at::Tensor angles = at::rand({seq, 1, dim}) * 6.0;
      const at::Tensor cos = angles.cos(), sin = angles.sin();
      const at::Tensor expected = Expression(x, cos, sin, kv_heads);
      const at::Tensor got = RotateToHeadMajor(x, cos, sin, kv_heads);
      ASSERT_EQ(got.sizes(), expected.sizes());
      EXPECT_TRUE(at::equal(got, expected)) << "kv_heads " << kv_heads << ", dim " << dim << ": max difference "
                                            << (got - expected).abs().max().item<double>();
      // Another dtype takes the tensor path, with the same values.
      const at::Tensor wide = RotateToHeadMajor(x.to(at::kDouble), cos.to(at::kDouble), sin.to(at::kDouble), kv_heads);
      EXPECT_LT((wide - expected.to(at::kDouble)).abs().max().item<double>(), 1e-5);
    }
  }
}

TEST(RotateToHeadMajorTest, RefusesShapesThatDoNotFit) {
  const at::Tensor x = at::randn({1, 4, 4, 8}), table = at::randn({4, 1, 8});
  EXPECT_THROW(RotateToHeadMajor(x, table, table, 3), c10::Error);  // 4 heads over 3 kv heads
  EXPECT_THROW(RotateToHeadMajor(x, at::randn({5, 1, 8}), at::randn({5, 1, 8}), 2), c10::Error);
}

}  // namespace
}  // namespace fedprllm
