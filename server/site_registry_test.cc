// SiteRegistry: one live session per identity, takeover of lost or disconnected sessions,
// and the lost-site rule (held polls keep a site live; silence past the timeout does not).
#include "server/site_registry.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fedprllm {
namespace {

using ::testing::HasSubstr;
constexpr int64_t kTimeout = 10'000;

TEST(SiteRegistryTest, OneLiveSessionPerIdentity) {
  SiteRegistry sites({"site-a", "site-b"}, kTimeout);
  ASSERT_TRUE(sites.StartSession("site-a", "process-1", "t1", 0).ok());
  const absl::Status second = sites.StartSession("site-a", "process-2", "t2", 1000);
  EXPECT_EQ(second.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(second.message(), HasSubstr("site site-a already has a live session"));
  EXPECT_EQ(*sites.Authenticate("t1", "site-a", 1000), "site-a");  // the first one is untouched
  // The same process may replace its own session; the old token stops working.
  ASSERT_TRUE(sites.StartSession("site-a", "process-1", "t3", 2000).ok());
  EXPECT_EQ(sites.Authenticate("t1", "site-a", 2000).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(sites.Authenticate("t3", "site-b", 2000).status().code(), absl::StatusCode::kUnauthenticated);
  // A cancelled stream (the process died) lets a new process take over at once.
  sites.StreamCancelled("site-a");
  EXPECT_TRUE(sites.StartSession("site-a", "process-2", "t4", 3000).ok());
  EXPECT_EQ(sites.Participants(), std::vector<std::string>{"site-a"});
}

TEST(SiteRegistryTest, SilentSitesAreLostAndMayJoinAgain) {
  SiteRegistry sites({"site-a", "site-b"}, kTimeout);
  ASSERT_TRUE(sites.StartSession("site-a", "a", "ta", 0).ok());
  ASSERT_TRUE(sites.StartSession("site-b", "b", "tb", 0).ok());
  sites.PollStarted("site-b", 0);  // a held long poll counts as heard from now
  v1::HeartbeatRequest beat;
  beat.set_activity(v1::SITE_ACTIVITY_CALIBRATING);
  beat.set_round(0);
  beat.set_layer(3);
  beat.set_layers_done(2);
  beat.set_layers_total(5);
  sites.Report("site-a", beat, 5000);
  EXPECT_TRUE(sites.DeclareLost(5000 + kTimeout).empty());
  const auto lost = sites.DeclareLost(5000 + kTimeout + 1);
  ASSERT_EQ(lost.size(), 1u);
  EXPECT_EQ(lost[0].first, "site-a");
  EXPECT_THAT(lost[0].second, HasSubstr("last seen calibrating layer 3 of round 0 (2/5 layers done)"));
  EXPECT_EQ(sites.LiveParticipants(), std::vector<std::string>{"site-b"});
  EXPECT_EQ(sites.Authenticate("ta", "site-a", 20000).status().code(), absl::StatusCode::kUnauthenticated);
  // Another process of a lost site takes over; it is live again.
  ASSERT_TRUE(sites.StartSession("site-a", "a2", "ta2", 20000).ok());
  EXPECT_EQ(sites.LiveParticipants(), (std::vector<std::string>{"site-a", "site-b"}));
  // Once its poll ends, site-b's silence counts too.
  sites.PollEnded("site-b", 20000);
  EXPECT_EQ(sites.DeclareLost(20000 + kTimeout + 1).size(), 2u);
}

TEST(SiteRegistryTest, RestoredParticipantsArePresumedLiveUntilTheTimeout) {
  SiteRegistry sites({"site-a", "site-b", "site-c"}, kTimeout);
  sites.RestoreParticipants({"site-a", "site-c", "no-longer-allowed"}, 100);
  EXPECT_EQ(sites.LiveParticipants(), (std::vector<std::string>{"site-a", "site-c"}));
  EXPECT_TRUE(sites.StartSession("site-a", "a", "t", 200).ok());  // no session to take over
  EXPECT_EQ(sites.DeclareLost(100 + kTimeout + 1).size(), 1u);    // site-c never came back
  EXPECT_FALSE(sites.StatusJson(0)["site-b"]["participant"].get<bool>());
}

}  // namespace
}  // namespace fedprllm
