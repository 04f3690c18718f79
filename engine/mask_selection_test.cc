// Tests for mask selection: exact counts, brute-force agreement, ties, N:M, scores, packing.
#include "engine/mask_selection.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <tuple>
#include <vector>

#include "engine/test_groups.h"
#include "gtest/gtest.h"

namespace fedprllm {
namespace {

// Brute-force reference: row-major score values -> expected prune flags, by sorting each group
// by (score, flat index) with NaN above +inf.
std::vector<uint8_t> BruteForce(const std::vector<double>& s, int64_t rows, int64_t cols,
                                ComparisonGroup group, const SparsityPattern& p) {
  std::vector<uint8_t> out(s.size(), 0);
  // NaN ranks above +inf.
  auto key = [&](int64_t i) {
    return std::make_pair(std::isnan(s[i]), std::isnan(s[i]) ? 0 : s[i]);
  };
  auto pick = [&](std::vector<int64_t> idx, int64_t k) {
    std::sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) {
      return std::make_pair(key(a), a) < std::make_pair(key(b), b);
    });
    for (int64_t i = 0; i < k; ++i) out[idx[i]] = 1;
  };
  std::vector<std::vector<int64_t>> groups = testing::FlatIndexGroups(rows, cols, group, p);
  for (auto& g : groups) {
    const int64_t k = p.structured() ? p.n : NumToPrune(g.size(), p.sparsity);
    pick(g, k);
  }
  return out;
}

std::vector<uint8_t> ToBytes(const at::Tensor& b) {
  at::Tensor u = b.to(at::kByte).contiguous().view({-1});
  return std::vector<uint8_t>(u.data_ptr<uint8_t>(), u.data_ptr<uint8_t>() + u.numel());
}

std::vector<double> ToDoubles(const at::Tensor& t) {
  at::Tensor d = t.to(at::kDouble).contiguous().view({-1});
  return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

constexpr ComparisonGroup kGroups[] = {ComparisonGroup::kLayer, ComparisonGroup::kRow,
                                       ComparisonGroup::kColumn};

TEST(ParseTest, GroupsAndPatterns) {
  for (ComparisonGroup g : kGroups) {
    EXPECT_EQ(ParseComparisonGroup(ComparisonGroupName(g)).value(), g);
  }
  EXPECT_FALSE(ParseComparisonGroup("rows").ok());

  auto p = SparsityPattern::Parse("2:4");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->n, 2);
  EXPECT_EQ(p->m, 4);
  EXPECT_DOUBLE_EQ(p->sparsity, 0.5);
  EXPECT_EQ(p->ToString(), "2:4");
  EXPECT_EQ(SparsityPattern::Parse("4:8")->m, 8);
  auto u = SparsityPattern::Parse("unstructured", 0.7);
  ASSERT_TRUE(u.ok());
  EXPECT_FALSE(u->structured());
  EXPECT_DOUBLE_EQ(u->sparsity, 0.7);
  EXPECT_EQ(u->ToString(), "unstructured");
  for (const char* bad : {"4:2", "0:4", "2:2", "a:b", "2:4:8", "", "2:0", "-1:4", "dense"}) {
    EXPECT_FALSE(SparsityPattern::Parse(bad).ok()) << bad;
  }
  EXPECT_FALSE(SparsityPattern::Parse("unstructured", 1.0).ok());
  EXPECT_FALSE(SparsityPattern::Parse("unstructured", -0.1).ok());
  EXPECT_FALSE(SparsityPattern::Parse("unstructured", NAN).ok());
  EXPECT_FALSE((SparsityPattern{0.5, 2, 0}).Validate().ok());

  EXPECT_TRUE(p->CheckShape({3, 8}).ok());
  EXPECT_FALSE(p->CheckShape({3, 6}).ok());
  EXPECT_FALSE(p->CheckShape({24}).ok());
  EXPECT_TRUE(u->CheckShape({3, 7}).ok());
}

TEST(NumToPruneTest, FloorWithRepresentationSlack) {
  EXPECT_EQ(NumToPrune(10, 0.7), 7);
  EXPECT_EQ(NumToPrune(11, 0.5), 5);
  EXPECT_EQ(NumToPrune(3, 0.1), 0);
  EXPECT_EQ(NumToPrune(100, 0.29), 29);
  EXPECT_EQ(NumToPrune(11008, 0.5), 5504);
  EXPECT_EQ(NumToPrune(0, 0.5), 0);
}

TEST(SelectLowestTest, ExactCountsPerGroup) {
  std::mt19937 rng(1);
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 1},   {1, 7},  {3, 5},    {7, 33},
                                                           {16, 16}, {5, 17}, {64, 100}, {33, 1}};
  for (auto [rows, cols] : shapes) {
    // Few distinct values, so many ties cross the selection boundary.
    at::Tensor score = at::randint(0, 4, {rows, cols}, at::kFloat);
    for (double sparsity : {0.0, 0.1, 0.5, 0.7, 0.99}) {
      const SparsityPattern p{sparsity};
      at::Tensor prune_layer = SelectLowest(score, ComparisonGroup::kLayer, p);
      EXPECT_EQ(prune_layer.scalar_type(), at::kBool);
      EXPECT_EQ(prune_layer.sizes(), score.sizes());
      EXPECT_EQ(prune_layer.sum().item<int64_t>(), NumToPrune(rows * cols, sparsity));
      at::Tensor per_row = SelectLowest(score, ComparisonGroup::kRow, p).sum(1);
      EXPECT_TRUE(per_row.eq(NumToPrune(cols, sparsity)).all().item<bool>())
          << rows << "x" << cols << " s=" << sparsity;
      at::Tensor per_col = SelectLowest(score, ComparisonGroup::kColumn, p).sum(0);
      EXPECT_TRUE(per_col.eq(NumToPrune(rows, sparsity)).all().item<bool>())
          << rows << "x" << cols << " s=" << sparsity;
    }
  }
}

TEST(SelectLowestTest, MatchesBruteForce) {
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{4, 8},  {3, 16},  {9, 40},
                                                           {40, 9}, {17, 64}, {1, 200}};
  for (auto [rows, cols] : shapes) {
    for (bool ties : {false, true}) {
      at::Tensor score =
          ties ? at::randint(-3, 3, {rows, cols}, at::kFloat) : at::randn({rows, cols}, at::kFloat);
      const std::vector<double> values = ToDoubles(score);
      std::vector<SparsityPattern> patterns = {{0.3}, {0.5}, {0.8}};
      if (cols % 4 == 0) patterns.push_back({0.5, 2, 4});
      if (cols % 8 == 0) patterns.push_back({0.5, 4, 8});
      if (cols % 8 == 0) patterns.push_back({0.375, 3, 8});
      for (const SparsityPattern& p : patterns) {
        for (ComparisonGroup g : kGroups) {
          EXPECT_EQ(ToBytes(SelectLowest(score, g, p)), BruteForce(values, rows, cols, g, p))
              << rows << "x" << cols << " ties=" << ties << " " << p.ToString()
              << " s=" << p.sparsity << " group=" << ComparisonGroupName(g);
        }
      }
    }
  }
}

TEST(SelectLowestTest, BothKernelsMatchBruteForce) {
  for (int64_t len : {2, 5, 8, 16, 17, 100}) {
    at::Tensor key = at::randint(-2, 3, {7, len}, at::kFloat);
    // Sprinkle NaN and +inf, which must rank NaN above +inf.
    key.masked_fill_(at::rand({7, len}) < 0.1, NAN);
    key.masked_fill_(at::rand({7, len}) < 0.1, INFINITY);
    const std::vector<double> values = ToDoubles(key);
    for (int64_t k = 0; k < len; k += std::max<int64_t>(1, len / 5)) {
      const SparsityPattern p{(k + 0.5) / len};  // NumToPrune gives k
      const std::vector<uint8_t> expect = BruteForce(values, 7, len, ComparisonGroup::kRow, p);
      EXPECT_EQ(ToBytes(internal::LowestKPerRow(key, k)), expect) << len << " " << k;
      EXPECT_EQ(ToBytes(internal::LowestKPerRowTensorOps(key, k)), expect) << len << " " << k;
    }
    EXPECT_TRUE(internal::LowestKPerRow(key, len).all().item<bool>());
    EXPECT_TRUE(internal::LowestKPerRowTensorOps(key, len + 3).all().item<bool>());
  }
}

TEST(SelectLowestTest, FloatRadixKernelHandlesSignedZeroNegativeNanAndWideBuckets) {
  // Few distinct values put thousands of keys in one radix bucket; -0 must equal +0 and a
  // negative-signed NaN must still rank above +inf.
  at::Tensor key = at::randint(-2, 3, {3, 3000}, at::kFloat) * 0.5;
  key.masked_fill_(at::rand({3, 3000}) < 0.1, -0.0f);
  key.masked_fill_(at::rand({3, 3000}) < 0.05, -NAN);
  key.masked_fill_(at::rand({3, 3000}) < 0.05, INFINITY);
  key.masked_fill_(at::rand({3, 3000}) < 0.05, -INFINITY);
  key.index_put_({0, at::indexing::Slice(0, 100)}, at::randn({100}) * 1e-30);  // denormal range
  const std::vector<double> values = ToDoubles(key);
  for (int64_t k : {1, 17, 1500, 2600, 2999}) {
    const SparsityPattern p{(k + 0.5) / 3000};
    EXPECT_EQ(ToBytes(internal::LowestKPerRow(key, k)),
              BruteForce(values, 3, 3000, ComparisonGroup::kRow, p))
        << k;
  }
  EXPECT_EQ(ToBytes(SelectLowest(key, ComparisonGroup::kLayer, {0.5})),
            BruteForce(values, 3, 3000, ComparisonGroup::kLayer, {0.5}));
}

TEST(RowMaskTest, FusedKernelEqualsScoreSelectPack) {
  // Fused (rows a multiple of 8) and fallback (172, bf16) paths against the three calls.
  for (const std::vector<int64_t> shape : {std::vector<int64_t>{37, 64}, {5, 172}, {3, 4096}}) {
    for (bool ties : {false, true}) {
      at::Tensor weight = ties ? at::randint(-3, 4, shape, at::kFloat) * 0.25 : at::randn(shape);
      weight.view(-1)[1] = -0.0f;
      at::Tensor norm = at::rand({shape[1]}) * 4;
      norm[0] = -1e-9;  // a rounding-negative norm, clamped to 0
      if (ties) norm.fill_(1.0);
      for (double sparsity : {0.5, 0.3, 0.8}) {
        const SparsityPattern p{sparsity};
        EXPECT_EQ(RowMask(weight, norm, sparsity),
                  ToPackedMask(SelectLowest(WandaScore(weight, norm), ComparisonGroup::kRow, p)))
            << shape[1] << " ties=" << ties << " s=" << sparsity;
        EXPECT_EQ(RowMask(weight, at::Tensor(), sparsity),
                  ToPackedMask(SelectLowest(MagnitudeScore(weight), ComparisonGroup::kRow, p)));
        EXPECT_EQ(RowMask(weight.to(at::kBFloat16), norm, sparsity),
                  ToPackedMask(SelectLowest(WandaScore(weight.to(at::kBFloat16), norm), ComparisonGroup::kRow, p)));
      }
      EXPECT_EQ(RowMask(weight, norm, 0.0).CountOnes(), 0);
    }
  }
}

TEST(SelectLowestTest, IntegerAndDoubleKeysMatchBruteForce) {
  at::Tensor key = at::randint(0, 5, {6, 24}, at::kLong);
  const std::vector<double> values = ToDoubles(key);
  for (ComparisonGroup g : kGroups) {
    EXPECT_EQ(ToBytes(SelectLowest(key, g, {0.5})), BruteForce(values, 6, 24, g, {0.5}));
    EXPECT_EQ(ToBytes(SelectLowest(key.to(at::kDouble), g, {0.4})),
              BruteForce(values, 6, 24, g, {0.4}));
  }
}

TEST(SelectLowestTest, EqualScoresPruneLowestIndicesFirst) {
  at::Tensor score = at::zeros({4, 6}, at::kFloat);
  at::Tensor row = SelectLowest(score, ComparisonGroup::kRow, {0.5});
  at::Tensor col = SelectLowest(score, ComparisonGroup::kColumn, {0.5});
  at::Tensor layer = SelectLowest(score, ComparisonGroup::kLayer, {0.5});
  at::Tensor nm = SelectLowest(score, ComparisonGroup::kLayer, {0.5, 1, 3});
  for (int64_t r = 0; r < 4; ++r) {
    for (int64_t c = 0; c < 6; ++c) {
      EXPECT_EQ(row[r][c].item<bool>(), c < 3);
      EXPECT_EQ(col[r][c].item<bool>(), r < 2);
      EXPECT_EQ(layer[r][c].item<bool>(), r * 6 + c < 12);
      EXPECT_EQ(nm[r][c].item<bool>(), c % 3 == 0);
    }
  }
  // Long groups use the kthvalue path: ties at the boundary go to the lowest indices.
  at::Tensor wide = at::ones({2, 100}, at::kFloat);
  wide.index_put_({0, 99}, 0.0f);
  at::Tensor w = SelectLowest(wide, ComparisonGroup::kRow, {0.1});
  EXPECT_TRUE(w[0][99].item<bool>());
  EXPECT_EQ(w[0].narrow(0, 0, 9).sum().item<int64_t>(), 9);
  EXPECT_EQ(w[1].narrow(0, 0, 10).sum().item<int64_t>(), 10);
}

TEST(SelectLowestTest, NanRanksLast) {
  at::Tensor score = at::tensor({NAN, 1.0f, NAN, 5.0f, -2.0f, INFINITY}).view({1, 6});
  at::Tensor prune = SelectLowest(score, ComparisonGroup::kRow, {0.5});
  EXPECT_EQ(ToBytes(prune), (std::vector<uint8_t>{0, 1, 0, 1, 1, 0}));
  at::Tensor more = SelectLowest(score, ComparisonGroup::kRow, {0.84});
  EXPECT_EQ(ToBytes(more), (std::vector<uint8_t>{1, 1, 0, 1, 1, 1}));  // NaN above +inf
  EXPECT_EQ(ToBytes(internal::LowestKPerRowTensorOps(score, 5)), ToBytes(more));
}

TEST(SelectLowestTest, NMRunsHoldExactlyN) {
  at::Tensor score = at::randn({32, 64});
  for (auto [n, m] : {std::pair{2, 4}, std::pair{4, 8}}) {
    at::Tensor prune = SelectLowest(score, ComparisonGroup::kRow, {0.5, n, m});
    at::Tensor per_run = prune.view({32, 64 / m, m}).sum(2);
    EXPECT_TRUE(per_run.eq(n).all().item<bool>()) << n << ":" << m;
    // Every pruned score is <= every kept score of the same run.
    at::Tensor runs = score.view({-1, m});
    at::Tensor pr = prune.view({-1, m});
    at::Tensor max_pruned = runs.masked_fill(~pr, -INFINITY).amax(1);
    at::Tensor min_kept = runs.masked_fill(pr, INFINITY).amin(1);
    EXPECT_TRUE(max_pruned.le(min_kept).all().item<bool>());
  }
}

TEST(SelectLowestTest, RejectsBadInput) {
  at::Tensor score = at::randn({4, 6});
  EXPECT_THROW(SelectLowest(score, ComparisonGroup::kRow, {0.5, 2, 4}), c10::Error);
  EXPECT_THROW(SelectLowest(score, ComparisonGroup::kRow, {1.0}), c10::Error);
  EXPECT_THROW(SelectLowest(at::randn({24}), ComparisonGroup::kRow, {0.5}), c10::Error);
  EXPECT_EQ(SelectLowest(at::randn({24}), ComparisonGroup::kLayer, {0.5}).sum().item<int64_t>(),
            12);
}

TEST(ScoreTest, WandaAndMagnitude) {
  at::Tensor w = at::tensor({1.0f, -2.0f, 3.0f, -4.0f}).view({2, 2});
  at::Tensor norm = at::tensor({4.0f, 9.0f});
  at::Tensor expected = at::tensor({2.0f, 6.0f, 6.0f, 12.0f}).view({2, 2});
  EXPECT_TRUE(WandaScore(w, norm).equal(expected));
  at::Tensor from_bf16 = WandaScore(w.to(at::kBFloat16), norm.to(at::kDouble));
  EXPECT_EQ(from_bf16.scalar_type(), at::kFloat);
  EXPECT_TRUE(from_bf16.equal(expected));
  EXPECT_TRUE(MagnitudeScore(w).equal(at::tensor({1.0f, 2.0f, 3.0f, 4.0f}).view({2, 2})));
  EXPECT_EQ(w[0][1].item<float>(), -2.0f);  // inputs untouched
  EXPECT_THROW(WandaScore(w, at::ones({3})), c10::Error);
}

TEST(PackTest, RoundTripMatchesBitByBit) {
  const std::vector<std::vector<int64_t>> shapes = {{0},  {1},    {7},      {8},   {9},
                                                    {63}, {3, 5}, {17, 31}, {1000}};
  for (const auto& shape : shapes) {
    at::Tensor bits = at::rand(shape) < 0.4;
    PackedMask mask = ToPackedMask(bits);
    EXPECT_EQ(mask.shape(), shape);
    const std::vector<uint8_t> expect = ToBytes(bits);
    for (int64_t i = 0; i < mask.numel(); ++i) ASSERT_EQ(mask.Get(i), expect[i] != 0) << i;
    // Padding bits are zero: FromBytes accepts the bytes.
    EXPECT_TRUE(PackedMask::FromBytes(shape, mask.bytes()).ok());
    EXPECT_TRUE(FromPackedMask(mask).equal(bits));
    EXPECT_EQ(mask.CountOnes(), bits.sum().item<int64_t>());
  }
}

TEST(PackTest, UnpackMatchesSetBits) {
  PackedMask mask({5, 13});
  std::mt19937 rng(7);
  std::vector<uint8_t> expect(65);
  for (int64_t i = 0; i < 65; ++i) {
    expect[i] = rng() % 3 == 0;
    mask.Set(i, expect[i]);
  }
  at::Tensor t = FromPackedMask(mask);
  EXPECT_EQ(t.scalar_type(), at::kBool);
  EXPECT_EQ(t.sizes(), (std::vector<int64_t>{5, 13}));
  EXPECT_EQ(ToBytes(t), expect);
  // Integer 0/1 tensors pack like bools.
  EXPECT_EQ(ToPackedMask(t.to(at::kInt)), mask);
}

}  // namespace
}  // namespace fedprllm
