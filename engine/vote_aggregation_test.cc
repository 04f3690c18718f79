// Tests for vote aggregation: counting, most-voted selection with tie-breaks, scaling, limits.
#include "engine/vote_aggregation.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <tuple>
#include <vector>

#include "engine/test_groups.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fedprllm {
namespace {

PackedMask RandomMask(std::vector<int64_t> shape, std::mt19937& rng, double p) {
  std::vector<uint8_t> bits(NumElements(shape));
  std::bernoulli_distribution coin(p);
  for (auto& b : bits) b = coin(rng);
  return PackedMask::FromBools(std::move(shape), bits);
}

std::vector<float> ToFloats(const at::Tensor& t) {
  at::Tensor f = t.to(at::kFloat).contiguous().view({-1});
  return std::vector<float>(f.data_ptr<float>(), f.data_ptr<float>() + f.numel());
}

// Independent implementation of the kRandom priority documented in vote_aggregation.h.
uint64_t Mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
uint64_t RandomPriority(uint64_t seed, const std::string& name, int64_t i) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char c : name) h = (h ^ c) * 0x100000001B3ull;
  const uint64_t stream = Mix(seed ^ Mix(h));
  return Mix(stream + uint64_t(i + 1) * 0x9E3779B97F4A7C15ull) >> 32;
}

// Brute force: per group sort by (-votes, tie key, index) and prune the first k.
PackedMask BruteChoose(const std::vector<int>& votes, const std::vector<float>& w, int64_t rows,
                       int64_t cols, const AggregationOptions& o, const std::string& name) {
  PackedMask out({rows, cols});
  auto tie = [&](int64_t i) -> double {
    if (o.tie_break == TieBreak::kIndex) return 0;  // the index itself decides
    return o.tie_break == TieBreak::kRandom ? double(RandomPriority(o.seed, name, i))
                                            : std::fabs(double(w[i]));
  };
  const SparsityPattern& p = o.pattern;
  std::vector<std::vector<int64_t>> groups = testing::FlatIndexGroups(rows, cols, o.group, p);
  for (auto& g : groups) {
    std::sort(g.begin(), g.end(), [&](int64_t a, int64_t b) {
      return std::make_tuple(-votes[a], tie(a), a) < std::make_tuple(-votes[b], tie(b), b);
    });
    const int64_t k = p.structured() ? p.n : NumToPrune(g.size(), p.sparsity);
    for (int64_t i = 0; i < k; ++i) out.Set(g[i], true);
  }
  return out;
}

VoteCounter CounterFromVotes(std::vector<int64_t> shape, const std::vector<int>& votes,
                             int clients) {
  VoteCounter counter(shape);
  for (int c = 0; c < clients; ++c) {
    PackedMask m(shape);
    for (size_t i = 0; i < votes.size(); ++i) m.Set(i, votes[i] > c);
    EXPECT_TRUE(counter.Add(m).ok());
  }
  return counter;
}

TEST(VoteCounterTest, CountsMatchBruteForce) {
  std::mt19937 rng(3);
  const std::vector<int64_t> shape = {3, 7};  // 21 weights: a partial last byte
  VoteCounter counter(shape);
  std::vector<int> expect(21, 0);
  for (int c = 0; c < 9; ++c) {
    PackedMask m = RandomMask(shape, rng, 0.4);
    for (int64_t i = 0; i < 21; ++i) expect[i] += m.Get(i);
    ASSERT_TRUE(counter.Add(m).ok());
  }
  EXPECT_EQ(counter.num_clients(), 9);
  at::Tensor v = counter.votes();
  EXPECT_EQ(v.scalar_type(), at::kInt);
  EXPECT_EQ(v.sizes(), (std::vector<int64_t>{3, 7}));
  for (int64_t i = 0; i < 21; ++i) EXPECT_EQ(v.view({-1})[i].item<int>(), expect[i]) << i;

  at::Tensor hist = VoteHistogram(counter);
  ASSERT_EQ(hist.numel(), 10);
  for (int k = 0; k <= 9; ++k) {
    EXPECT_EQ(hist[k].item<int64_t>(), std::count(expect.begin(), expect.end(), k)) << k;
  }
}

TEST(VoteCounterTest, OneAndTwoByteCountersCountAlike) {
  std::mt19937 rng(5);
  const std::vector<int64_t> shape = {5, 37};  // 185 weights: full bytes and a partial one
  VoteCounter narrow(shape, /*max_clients=*/255);
  VoteCounter wide(shape, /*max_clients=*/256);
  EXPECT_EQ(narrow.bytes_per_weight(), 1);
  EXPECT_EQ(wide.bytes_per_weight(), 2);
  EXPECT_EQ(VoteCounter(shape).bytes_per_weight(), 2);
  std::vector<int> expect(185, 0);
  for (int c = 0; c < 40; ++c) {
    PackedMask m = RandomMask(shape, rng, 0.3 + 0.01 * c);
    for (int64_t i = 0; i < 185; ++i) expect[i] += m.Get(i);
    ASSERT_TRUE(narrow.Add(m).ok());
    ASSERT_TRUE(wide.Add(m).ok());
  }
  const at::Tensor v = narrow.votes().view({-1});
  for (int64_t i = 0; i < 185; ++i) ASSERT_EQ(v[i].item<int>(), expect[i]) << i;
  EXPECT_TRUE(at::equal(narrow.votes(), wide.votes()));

  // The same decisions from either width, with and without scaling.
  const at::Tensor w = at::randn({5, 37});
  for (ComparisonGroup group : {ComparisonGroup::kLayer, ComparisonGroup::kRow}) {
    AggregationOptions o;
    o.group = group;
    absl::StatusOr<PackedMask> a = ChooseMask(narrow, w, o, "t");
    absl::StatusOr<PackedMask> b = ChooseMask(wide, w, o, "t");
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(a->bytes(), b->bytes());
    EXPECT_TRUE(at::equal(ApplyDecision(w, *a, &narrow), ApplyDecision(w, *b, &wide)));
  }
}

TEST(VoteCounterTest, AOneByteCounterHolds255VotesWithoutSpillingIntoItsNeighbours) {
  VoteCounter counter({2, 8}, /*max_clients=*/255);
  PackedMask even({2, 8});
  for (int i = 0; i < 16; i += 2) even.Set(i, true);
  for (int c = 0; c < 255; ++c) ASSERT_TRUE(counter.Add(even).ok()) << c;
  const at::Tensor v = counter.votes().view({-1});
  for (int i = 0; i < 16; ++i) EXPECT_EQ(v[i].item<int>(), i % 2 == 0 ? 255 : 0) << i;
  const absl::Status s = counter.Add(even);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("maximum of 255 clients"));
  EXPECT_EQ(counter.num_clients(), 255);
}

// The AVX2 and the portable kernels of VoteCounter::Add against each other and a bit-by-bit
// sum, on random masks of sizes that end mid-group and mid-byte, from random starting counts
// (any value a counter may hold before a vote).
template <typename Count>
void CheckKernelsAgree(int64_t n, std::mt19937& rng, int max_start) {
  std::vector<uint8_t> bits((n + 7) / 8);
  for (auto& b : bits) b = static_cast<uint8_t>(rng());
  std::vector<Count> start(n + 1);  // one counter past the end, which must stay untouched
  std::uniform_int_distribution<int> count(0, max_start);
  for (auto& c : start) c = static_cast<Count>(count(rng));
  std::vector<Count> simd = start, scalar = start, expect = start;
  for (int64_t i = 0; i < n; ++i) expect[i] += (bits[i / 8] >> (i % 8)) & 1;
  vote_internal::AddBits(bits.data(), n, simd.data(), /*simd=*/true);
  vote_internal::AddBits(bits.data(), n, scalar.data(), /*simd=*/false);
  EXPECT_EQ(scalar, expect) << "portable kernel, n = " << n << ", " << sizeof(Count) << "-byte counters";
  EXPECT_EQ(simd, expect) << "SIMD kernel, n = " << n << ", " << sizeof(Count) << "-byte counters";
}

TEST(VoteCounterTest, SimdAndPortableKernelsGiveTheSameCounts) {
  std::mt19937 rng(11);
  for (int64_t n : {1, 7, 8, 9, 15, 17, 31, 33, 63, 65, 127, 129, 255, 257, 1001, 4099, 65537, 1048583}) {
    CheckKernelsAgree<uint8_t>(n, rng, 254);
    CheckKernelsAgree<uint16_t>(n, rng, 65534);
  }
}

TEST(VoteCounterTest, RejectsMismatchedMaskWithoutChange) {
  VoteCounter counter({4, 4});
  EXPECT_FALSE(counter.Add(PackedMask({4, 5})).ok());
  EXPECT_FALSE(counter.Add(PackedMask({16})).ok());
  EXPECT_EQ(counter.num_clients(), 0);
}

TEST(VoteCounterTest, RefusesClient65536) {
  VoteCounter counter({3});
  PackedMask all({3});
  for (int i = 0; i < 3; ++i) all.Set(i, true);
  for (int c = 0; c < 65535; ++c) ASSERT_TRUE(counter.Add(all).ok()) << c;
  const absl::Status s = counter.Add(all);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(counter.num_clients(), 65535);
  EXPECT_TRUE(counter.votes().eq(65535).all().item<bool>());
  EXPECT_EQ(VoteHistogram(counter)[65535].item<int64_t>(), 3);
}

TEST(ChooseMaskTest, MostVotedWithMagnitudeTieBreak) {
  // Row 0: idx 1 has the most votes; among the votes==1 weights, |-0.1| is smallest.
  // Row 1: idx 1, 2 (votes 1) beat the votes==0 ones.
  // Row 2: three weights tie on votes and |W|: lower index wins.
  const std::vector<int> votes = {1, 2, 1, 1, 0, 1, 1, 0, 1, 1, 1, 0};
  at::Tensor w =
      at::tensor({0.5f, 9.0f, -0.1f, 0.3f, 1.0f, 2.0f, -2.0f, 3.0f, 2.0f, -2.0f, 2.0f, 0.0f})
          .view({3, 4});
  VoteCounter counter = CounterFromVotes({3, 4}, votes, 2);
  AggregationOptions o;
  o.group = ComparisonGroup::kRow;
  auto mask = ChooseMask(counter, w, o, "t");
  ASSERT_TRUE(mask.ok()) << mask.status();
  const std::vector<uint8_t> expect = {0, 1, 1, 0, 0, 1, 1, 0, 1, 1, 0, 0};
  EXPECT_EQ(mask->ToBools(), expect);

  // Whole-matrix group, 25%: 3 weights; idx 1 (2 votes), then votes==1 by |W|: 2 (0.1), 3 (0.3).
  o.group = ComparisonGroup::kLayer;
  o.pattern.sparsity = 0.25;
  auto layer = ChooseMask(counter, w, o, "t");
  ASSERT_TRUE(layer.ok());
  EXPECT_EQ(layer->ToBools(), (std::vector<uint8_t>{0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0}));
}

TEST(ChooseMaskTest, MatchesBruteForce) {
  std::mt19937 rng(11);
  const int64_t rows = 12, cols = 24;
  std::vector<int> votes(rows * cols);
  for (auto& v : votes) v = rng() % 4;
  // Few distinct magnitudes so magnitude ties reach the index rule.
  at::Tensor w = at::randint(-3, 4, {rows, cols}, at::kFloat) * 0.5;
  const std::vector<float> wv = ToFloats(w);
  VoteCounter counter = CounterFromVotes({rows, cols}, votes, 3);
  for (TieBreak tb : {TieBreak::kSmallerMagnitude, TieBreak::kRandom, TieBreak::kIndex}) {
    for (ComparisonGroup g :
         {ComparisonGroup::kLayer, ComparisonGroup::kRow, ComparisonGroup::kColumn}) {
      for (SparsityPattern p : {SparsityPattern{0.5}, SparsityPattern{0.3},
                                SparsityPattern{0.5, 2, 4}, SparsityPattern{0.5, 4, 8}}) {
        AggregationOptions o{g, p, tb, /*seed=*/42};
        auto mask = ChooseMask(counter, w, o, "layers.3.mlp.up_proj");
        ASSERT_TRUE(mask.ok()) << mask.status();
        EXPECT_EQ(*mask, BruteChoose(votes, wv, rows, cols, o, "layers.3.mlp.up_proj"))
            << TieBreakName(tb) << " " << ComparisonGroupName(g) << " " << p.ToString() << " "
            << p.sparsity;
      }
    }
  }
}

TEST(ChooseMaskTest, IndexTieBreakPrunesTheLowestIndexesOfEachGroup) {
  // Every weight has one vote and a different |W|: the tie-break alone decides.
  const std::vector<int64_t> shape = {4, 6};
  at::Tensor w = at::arange(24, at::kFloat).flip(0).view({4, 6}) + 1;  // larger |W| at lower indexes
  VoteCounter counter = CounterFromVotes(shape, std::vector<int>(24, 1), 1);
  AggregationOptions o;
  o.tie_break = TieBreak::kIndex;
  o.group = ComparisonGroup::kRow;
  auto rows = ChooseMask(counter, w, o, "t");
  ASSERT_TRUE(rows.ok()) << rows.status();
  for (int64_t i = 0; i < 24; ++i) EXPECT_EQ(rows->Get(i), i % 6 < 3) << i;
  o.group = ComparisonGroup::kColumn;
  auto columns = ChooseMask(counter, w, o, "t");
  ASSERT_TRUE(columns.ok());
  for (int64_t i = 0; i < 24; ++i) EXPECT_EQ(columns->Get(i), i / 6 < 2) << i;
  o.tie_break = TieBreak::kSmallerMagnitude;  // the other rule picks the other end
  auto by_magnitude = ChooseMask(counter, w, o, "t");
  ASSERT_TRUE(by_magnitude.ok());
  for (int64_t i = 0; i < 24; ++i) EXPECT_EQ(by_magnitude->Get(i), i / 6 >= 2) << i;
  EXPECT_EQ(TieBreakName(ParseTieBreak("index").value()), "index");
}

TEST(ChooseMaskTest, RandomTieBreakIsSeededPerTensor) {
  const std::vector<int64_t> shape = {16, 64};
  at::Tensor w = at::ones(shape);
  std::vector<int> votes(16 * 64, 1);
  for (int i = 0; i < 16 * 64; i += 5) votes[i] = 2;  // 205 weights with more votes
  VoteCounter counter = CounterFromVotes(shape, votes, 2);
  AggregationOptions o;
  o.tie_break = TieBreak::kRandom;
  o.seed = 7;
  auto a = ChooseMask(counter, w, o, "q_proj");
  auto b = ChooseMask(counter, w, o, "q_proj");
  o.seed = 8;
  auto c = ChooseMask(counter, w, o, "q_proj");
  o.seed = 7;
  auto d = ChooseMask(counter, w, o, "k_proj");
  ASSERT_TRUE(a.ok() && b.ok() && c.ok() && d.ok());
  EXPECT_EQ(*a, *b);
  EXPECT_FALSE(*a == *c);
  EXPECT_FALSE(*a == *d);
  for (const PackedMask* m : {&*a, &*c, &*d}) {
    EXPECT_EQ(m->CountOnes(), 512);
    for (int i = 0; i < 16 * 64; i += 5) EXPECT_TRUE(m->Get(i)) << i;
  }
  EXPECT_EQ(TieBreakName(ParseTieBreak("random").value()), "random");
  EXPECT_EQ(ParseTieBreak("magnitude").value(), TieBreak::kSmallerMagnitude);
  EXPECT_FALSE(ParseTieBreak("coin").ok());
}

TEST(ChooseMaskTest, OneClientGetsItsOwnMask) {
  at::Tensor w = at::randn({8, 32});
  at::Tensor score = WandaScore(w, at::rand({32}));
  for (TieBreak tb : {TieBreak::kSmallerMagnitude, TieBreak::kRandom, TieBreak::kIndex}) {
    for (ComparisonGroup g :
         {ComparisonGroup::kLayer, ComparisonGroup::kRow, ComparisonGroup::kColumn}) {
      for (SparsityPattern p :
           {SparsityPattern{0.5}, SparsityPattern{0.7}, SparsityPattern{0.5, 2, 4}}) {
        PackedMask client = ToPackedMask(SelectLowest(score, g, p));
        VoteCounter counter({8, 32});
        ASSERT_TRUE(counter.Add(client).ok());
        auto chosen = ChooseMask(counter, w, {g, p, tb, 1}, "t");
        ASSERT_TRUE(chosen.ok());
        EXPECT_EQ(*chosen, client) << ComparisonGroupName(g) << " " << p.ToString();
      }
    }
  }
}

TEST(ChooseMaskTest, IndependentOfArrivalOrder) {
  std::mt19937 rng(5);
  std::vector<PackedMask> masks;
  for (int i = 0; i < 6; ++i) masks.push_back(RandomMask({10, 16}, rng, 0.5));
  VoteCounter forward({10, 16}), backward({10, 16});
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(forward.Add(masks[i]).ok());
    ASSERT_TRUE(backward.Add(masks[5 - i]).ok());
  }
  at::Tensor w = at::randn({10, 16});
  AggregationOptions o{ComparisonGroup::kColumn, {0.6}, TieBreak::kRandom, 3};
  EXPECT_EQ(ChooseMask(forward, w, o, "x").value(), ChooseMask(backward, w, o, "x").value());
}

TEST(ChooseMaskTest, RejectsBadInput) {
  VoteCounter counter({4, 6});
  EXPECT_FALSE(ChooseMask(counter, at::ones({4, 7}), {}, "t").ok());
  EXPECT_FALSE(
      ChooseMask(counter, at::ones({4, 6}), {ComparisonGroup::kRow, {0.5, 2, 4}}, "t").ok());
  EXPECT_FALSE(ChooseMask(counter, at::ones({4, 6}), {ComparisonGroup::kRow, {1.5}}, "t").ok());
  VoteCounter flat({24});
  EXPECT_FALSE(ChooseMask(flat, at::ones({24}), {ComparisonGroup::kRow, {0.5}}, "t").ok());
  EXPECT_TRUE(ChooseMask(flat, at::ones({24}), {ComparisonGroup::kLayer, {0.5}}, "t").ok());
}

TEST(ApplyDecisionTest, ZeroesAndScales) {
  // 4 clients; votes 0..4 over 5 weights (plus one more with 2 votes).
  const std::vector<int> votes = {0, 1, 2, 3, 4, 2};
  VoteCounter counter = CounterFromVotes({2, 3}, votes, 4);
  at::Tensor w = at::tensor({1.0f, -2.0f, -3.0f, 4.0f, 5.0f, -6.0f}).view({2, 3});
  PackedMask mask({2, 3});
  mask.Set(4, true);
  mask.Set(2, true);

  at::Tensor plain = ApplyDecision(w, mask, nullptr);
  EXPECT_EQ(ToFloats(plain), (std::vector<float>{1, -2, 0, 4, 0, -6}));
  at::Tensor scaled = ApplyDecision(w, mask, &counter);
  EXPECT_EQ(scaled.scalar_type(), at::kFloat);
  // kept weight * (4 - votes) / 4
  EXPECT_EQ(ToFloats(scaled), (std::vector<float>{1.0f, -1.5f, 0.0f, 1.0f, 0.0f, -3.0f}));
  EXPECT_FALSE(std::signbit(plain[0][2].item<float>()));  // pruned entries are +0
  EXPECT_FALSE(std::signbit(scaled[0][2].item<float>()));

  at::Tensor bf = ApplyDecision(w.to(at::kBFloat16), mask, &counter);
  EXPECT_EQ(bf.scalar_type(), at::kBFloat16);
  EXPECT_EQ(ToFloats(bf), (std::vector<float>{1.0f, -1.5f, 0.0f, 1.0f, 0.0f, -3.0f}));
  EXPECT_EQ(w[0][2].item<float>(), -3.0f);  // input untouched
  at::Tensor dbl = ApplyDecision(w.to(at::kDouble), mask, &counter);
  EXPECT_EQ(dbl.scalar_type(), at::kDouble);
  EXPECT_EQ(ToFloats(dbl), ToFloats(scaled));
  EXPECT_THROW(ApplyDecision(at::ones({3, 2}), mask, nullptr), c10::Error);
}

}  // namespace
}  // namespace fedprllm
