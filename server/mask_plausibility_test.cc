// MaskPlausibility: each rule (row counts, layer counts, declared counts, N:M left to the
// codec), messages naming the tensor and the row, a tail row, padding, and the bit-range
// popcount against a bit-by-bit count.
#include "server/mask_plausibility.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "absl/strings/str_cat.h"

#include "common/splitmix64.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fedprllm {
namespace {

using ::testing::HasSubstr;

constexpr char kName[] = "model.layers.0.self_attn.q_proj.weight";

// An honest row mask: exactly k pseudo-random weights pruned in every row.
PackedMask RowMask(int64_t rows, int64_t cols, int64_t k, uint64_t seed) {
  PackedMask mask({rows, cols});
  uint64_t state = seed;
  for (int64_t r = 0; r < rows; ++r) {
    int64_t set = 0;
    while (set < k) {
      const int64_t c = static_cast<int64_t>(SplitMix64(&state) % static_cast<uint64_t>(cols));
      if (!mask.Get(r * cols + c)) {
        mask.Set(r * cols + c, true);
        ++set;
      }
    }
  }
  return mask;
}

SparsityPattern Unstructured(double sparsity) {
  SparsityPattern p;
  p.sparsity = sparsity;
  return p;
}

TEST(MaskPlausibilityTest, ParsesSiteGroups) {
  EXPECT_EQ(*ParseSiteGroup("row"), SiteGroup::kRow);
  EXPECT_EQ(*ParseSiteGroup("layer"), SiteGroup::kLayer);
  EXPECT_EQ(*ParseSiteGroup("any"), SiteGroup::kAny);
  EXPECT_FALSE(ParseSiteGroup("column").ok());
  EXPECT_EQ(SiteGroupName(SiteGroup::kRow), "row");
}

TEST(MaskPlausibilityTest, ExpectedCounts) {
  const MaskPlausibility row(SiteGroup::kRow, Unstructured(0.5));
  EXPECT_EQ(*row.ExpectedCount({64, 64}), 64 * 32);
  EXPECT_EQ(*row.ExpectedCount({64, 172}), 64 * 86);
  EXPECT_EQ(*row.ExpectedCount({3, 5}), 3 * 2);  // floor(5 * 0.5) per row
  const MaskPlausibility row7(SiteGroup::kRow, Unstructured(0.7));
  EXPECT_EQ(*row7.ExpectedCount({2, 10}), 2 * 7);  // NumToPrune's slack: 10 * 0.7 = 7
  const MaskPlausibility layer(SiteGroup::kLayer, Unstructured(0.5));
  EXPECT_EQ(*layer.ExpectedCount({3, 5}), 7);
  EXPECT_FALSE(MaskPlausibility(SiteGroup::kAny, Unstructured(0.5)).ExpectedCount({3, 5}).has_value());
  // N:M: the wire format's checks 6 and 18 are the rule.
  EXPECT_FALSE(MaskPlausibility(SiteGroup::kRow, *SparsityPattern::Parse("2:4")).ExpectedCount({4, 8}).has_value());
}

TEST(MaskPlausibilityTest, HonestRowMasksPass) {
  const MaskPlausibility rule(SiteGroup::kRow, Unstructured(0.5));
  for (int64_t cols : {64, 172, 5, 13, 1}) {
    const PackedMask mask = RowMask(7, cols, NumToPrune(cols, 0.5), cols);
    EXPECT_TRUE(rule.CheckMask(kName, mask).ok()) << cols << ": " << rule.CheckMask(kName, mask);
    PayloadHeader header;
    header.tensors.push_back({kName, {7, cols}, mask.CountOnes()});
    EXPECT_TRUE(rule.CheckHeader(header).ok()) << rule.CheckHeader(header);
  }
}

TEST(MaskPlausibilityTest, WrongRowNamesTensorRowAndRule) {
  const MaskPlausibility rule(SiteGroup::kRow, Unstructured(0.5));
  PackedMask mask = RowMask(8, 64, 32, 1);
  // Row 3 loses 22 pruned weights and row 5 gains them: the total is still right.
  int64_t moved = 0;
  for (int64_t c = 0; c < 64 && moved < 22; ++c) {
    if (mask.Get(3 * 64 + c)) {
      mask.Set(3 * 64 + c, false);
      ++moved;
    }
  }
  for (int64_t c = 0, added = 0; c < 64 && added < moved; ++c) {
    if (!mask.Get(5 * 64 + c)) {
      mask.Set(5 * 64 + c, true);
      ++added;
    }
  }
  ASSERT_EQ(mask.CountOnes(), 8 * 32);
  const absl::Status s = rule.CheckMask(kName, mask);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), absl::StrCat("tensor '", kName,
                                      "': row 3 prunes 10 of 64 weights; the job's Wanda row rule (site_group row, "
                                      "sparsity 0.5) needs exactly 32"));
}

TEST(MaskPlausibilityTest, TailRowAndUnalignedRows) {
  // Rows of 13 bits: rows straddle bytes, and the last row ends inside the last byte (3
  // padding bits). Only the tail row is wrong.
  const MaskPlausibility rule(SiteGroup::kRow, Unstructured(0.5));
  PackedMask mask = RowMask(5, 13, 6, 9);
  ASSERT_TRUE(rule.CheckMask(kName, mask).ok());
  for (int64_t c = 0; c < 13; ++c) {
    if (!mask.Get(4 * 13 + c)) {
      mask.Set(4 * 13 + c, true);
      break;
    }
  }
  const absl::Status s = rule.CheckMask(kName, mask);
  EXPECT_THAT(s.message(), HasSubstr("row 4 prunes 7 of 13 weights"));
  EXPECT_THAT(s.message(), HasSubstr("needs exactly 6"));
}

TEST(MaskPlausibilityTest, PaddingBitsAreNotCounted) {
  // 3 x 5 = 15 bits; bit 15 is padding. The assembler refuses set padding (check 16), but the
  // row counts must not read it either.
  const MaskPlausibility rule(SiteGroup::kRow, Unstructured(0.5));
  PackedMask mask = RowMask(3, 5, 2, 4);
  mask.mutable_bytes()[1] |= 0x80;
  EXPECT_TRUE(rule.CheckMask(kName, mask).ok());
}

TEST(MaskPlausibilityTest, DeclaredCountsAtTheHeader) {
  PayloadHeader header;
  header.tensors.push_back({"a", {64, 64}, 2048});
  header.tensors.push_back({kName, {64, 64}, 4096});  // a 100% mask
  const absl::Status row = MaskPlausibility(SiteGroup::kRow, Unstructured(0.5)).CheckHeader(header);
  EXPECT_EQ(row.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(row.message(), absl::StrCat("tensor '", kName,
                                        "': declared_count 4096, but the job's Wanda row rule (site_group row, "
                                        "sparsity 0.5) needs exactly 2048 (32 of 64 in each of 64 rows)"));
  header.tensors[1].declared_count = 0;  // a 0% mask
  const absl::Status layer = MaskPlausibility(SiteGroup::kLayer, Unstructured(0.5)).CheckHeader(header);
  EXPECT_THAT(layer.message(), HasSubstr("declared_count 0, but the job's layer rule (site_group layer, sparsity 0.5) "
                                         "needs exactly 2048 of its 4096 weights"));
  EXPECT_TRUE(MaskPlausibility(SiteGroup::kAny, Unstructured(0.5)).CheckHeader(header).ok());
}

TEST(MaskPlausibilityTest, LayerAndAnyDoNotCheckRows) {
  PackedMask mask({4, 8});
  for (int64_t i = 0; i < 16; ++i) mask.Set(i, true);  // rows 0-1 fully pruned, 2-3 kept
  EXPECT_TRUE(MaskPlausibility(SiteGroup::kLayer, Unstructured(0.5)).CheckMask(kName, mask).ok());
  EXPECT_TRUE(MaskPlausibility(SiteGroup::kAny, Unstructured(0.5)).CheckMask(kName, mask).ok());
  EXPECT_FALSE(MaskPlausibility(SiteGroup::kRow, Unstructured(0.5)).CheckMask(kName, mask).ok());
}

TEST(MaskPlausibilityTest, BitRangePopcountMatchesBitByBit) {
  PackedMask mask({1, 301});
  uint64_t state = 3;
  for (int64_t i = 0; i < mask.numel(); ++i) mask.Set(i, SplitMix64(&state) & 1);
  for (int64_t begin = 0; begin <= 301; begin += 7) {
    for (int64_t end = begin; end <= 301; end += 5) {
      int64_t expected = 0;
      for (int64_t i = begin; i < end; ++i) expected += mask.Get(i);
      ASSERT_EQ(internal::CountOnesInBitRange(mask.bytes().data(), begin, end), expected) << begin << ".." << end;
    }
  }
}

// A LLaMA-7B decoder layer's largest matrix (11008 x 4096, 45M weights) passes, and one
// row broken at the end is found. Prints the check's time (a measurement, not a bound).
TEST(MaskPlausibilityTest, SevenBillionScaleTensor) {
  const int64_t rows = 11008, cols = 4096;
  PackedMask mask({rows, cols});
  // Every row prunes its first half: byte-aligned rows of 512 bytes.
  for (int64_t r = 0; r < rows; ++r) {
    std::fill(mask.mutable_bytes().begin() + r * cols / 8, mask.mutable_bytes().begin() + r * cols / 8 + cols / 16,
              0xFF);
  }
  const MaskPlausibility rule(SiteGroup::kRow, Unstructured(0.5));
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(rule.CheckMask(kName, mask).ok());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("row check of an 11008 x 4096 mask: %.2f ms (%.2f GB/s of packed mask)\n", seconds * 1e3,
              rows * cols / 8 / seconds / 1e9);
  mask.Set((rows - 1) * cols + cols - 1, true);  // the last row prunes one weight too many
  const absl::Status broken = rule.CheckMask(kName, mask);
  EXPECT_THAT(broken.message(), ::testing::HasSubstr(absl::StrCat("row ", rows - 1, " prunes 2049 of 4096 weights")));
}

}  // namespace
}  // namespace fedprllm
