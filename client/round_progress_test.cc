// RoundProgress: the fraction done, the extrapolated time left and the log rate limit.
#include "client/round_progress.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace fedprllm {
namespace {

using ::testing::HasSubstr;

TEST(RoundProgressTest, OneShotRoundCountsCalibrationAndPropagationOfEveryLayer) {
  RoundProgress progress(/*layers_in_round=*/4, absl::Seconds(10));
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  progress.Start(t0);
  EXPECT_LT(progress.eta_seconds(), 0);
  // Layer 0 calibrated (1/8 of the round) after 5 s: 35 s left.
  EXPECT_FALSE(progress.Update({0, false, 4, 4}, 0, t0 + absl::Seconds(5)));
  EXPECT_DOUBLE_EQ(progress.fraction(), 0.125);
  EXPECT_DOUBLE_EQ(progress.eta_seconds(), 35);
  // Half of layer 2's propagation after 22 s: (2 + 0.75) / 4 done.
  EXPECT_TRUE(progress.Update({2, true, 2, 4}, 0, t0 + absl::Seconds(22)));
  EXPECT_DOUBLE_EQ(progress.fraction(), 2.75 / 4);
  EXPECT_NEAR(progress.eta_seconds(), 22 / (2.75 / 4) - 22, 1e-9);
  EXPECT_THAT(progress.Describe(),
              HasSubstr("layer 2 (3/4 of the round): propagating batch 2/4; 68% done, about 10 s left"));
  // The next line is due only 10 s after this one.
  EXPECT_FALSE(progress.Update({3, false, 1, 4}, 0, t0 + absl::Seconds(31)));
  EXPECT_TRUE(progress.Update({3, false, 2, 4}, 0, t0 + absl::Seconds(32)));
}

TEST(RoundProgressTest, IterativeRoundIsItsOneLayersCalibration) {
  RoundProgress progress(/*layers_in_round=*/1, absl::Seconds(1));
  const absl::Time t0 = absl::FromUnixSeconds(0);
  progress.Start(t0);
  progress.Update({7, false, 3, 12}, /*first_layer=*/7, t0 + absl::Seconds(6));
  EXPECT_DOUBLE_EQ(progress.fraction(), 0.25);
  EXPECT_DOUBLE_EQ(progress.eta_seconds(), 18);
  EXPECT_THAT(progress.Describe(), HasSubstr("layer 7 (1/1 of the round): calibrating batch 3/12"));
}

}  // namespace
}  // namespace fedprllm
