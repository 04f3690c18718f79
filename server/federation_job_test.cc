// FederationJob's deadlines and liveness on a fake clock, with no network: a round that
// reaches its deadline closes with the clients committed when they are at least min_clients,
// is extended when they are fewer, and fails the job once the extensions are spent, naming
// the missing sites; a lost site no longer holds up a round; the join phase times out; a
// second process of a site is refused; unwritable output is found at startup.
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/test_paths.h"
#include "server/federation_job.h"

namespace fedprllm {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

class DeadlineTest : public ::testing::Test {
 protected:
  static constexpr int64_t kStart = 1'000'000;
  static constexpr int kDeadlineSeconds = 10;

  void SetUp() override { StartJob([](ServerConfig*) {}); }

  // Starts a job with the fixture's config as changed by `edit`.
  void StartJob(const std::function<void(ServerConfig*)>& edit) {
    dir_ = fs::temp_directory_path() /
           ("fedprllm-deadline-" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
    if (job_ != nullptr) job_->Stop();
    job_.reset();
    auto model = LlamaModel::Load(testing::BundledModel());
    ASSERT_TRUE(model.ok()) << model.status();
    ServerConfig config = Config();
    edit(&config);
    ASSERT_TRUE(config.Validate().ok());
    auto job =
        FederationJob::Create(config, *std::move(model), testing::BundledTokenizer(), [this] { return now_.load(); });
    ASSERT_TRUE(job.ok()) << job.status();
    job_ = *std::move(job);
    job_->Start();
  }

  ServerConfig Config() const {
    ServerConfig config;
    config.insecure = true;
    config.allowed_clients = {"site-a", "site-b", "site-c"};
    config.expected_clients = 3;
    config.min_clients = 2;
    config.model = testing::BundledModel();
    config.output_dir = (dir_ / "out").string();
    config.state_dir = (dir_ / "state").string();
    config.round_deadline_seconds = kDeadlineSeconds;
    config.max_round_extensions = 1;
    return config;
  }

  void TearDown() override {
    if (job_ != nullptr) job_->Stop();
    job_.reset();
    if (!HasFailure()) fs::remove_all(dir_);
  }

  absl::StatusOr<v1::JoinResponse> Join(const std::string& site, const std::string& instance) {
    v1::JoinRequest request;
    request.set_client_name(site);
    request.set_model_fingerprint(job_->fingerprint());
    request.set_protocol_version(kProtocolVersion);
    request.set_instance_id(instance);
    return job_->Join(site, request);
  }

  // Joins every allowed client; returns their session tokens.
  std::vector<std::string> JoinAll() {
    std::vector<std::string> tokens;
    for (const char* site : {"site-a", "site-b", "site-c"}) {
      auto joined = Join(site, site);
      EXPECT_TRUE(joined.ok()) << joined.status();
      tokens.push_back(joined.ok() ? joined->session_token() : "");
    }
    return tokens;
  }

  // Waits (real time) until round 0 accepts uploads, then commits an all-kept mask set.
  void Commit(const std::string& token) {
    absl::StatusOr<UploadTicket> ticket;
    for (int i = 0; i < 200; ++i) {
      ticket = job_->BeginUpload(token, "", 0);
      if (ticket.ok()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ASSERT_TRUE(ticket.ok()) << ticket.status();
    auto spool = job_->NewUploadSpool(*ticket);
    ASSERT_TRUE(spool.ok()) << spool.status();
    for (const auto& [name, shape] : *ticket->tensors) ASSERT_TRUE((*spool)->Add(name, PackedMask(shape)).ok());
    std::promise<absl::StatusOr<v1::UploadAck>> acked;
    job_->CommitUpload(*std::move(ticket), *std::move(spool), UploadStats{},
                       [&acked](absl::StatusOr<v1::UploadAck> ack) { acked.set_value(std::move(ack)); });
    const absl::StatusOr<v1::UploadAck> ack = acked.get_future().get();
    ASSERT_TRUE(ack.ok()) << ack.status();
    EXPECT_TRUE(ack->committed());
  }

  fs::path dir_;
  std::atomic<int64_t> now_{kStart};
  std::unique_ptr<FederationJob> job_;
};

TEST_F(DeadlineTest, RoundClosesAtItsDeadlineWithMinClients) {
  const std::vector<std::string> tokens = JoinAll();
  Commit(tokens[0]);
  Commit(tokens[2]);  // site-b never uploads
  now_ = kStart + 1000 * kDeadlineSeconds + 1;
  ASSERT_TRUE(job_->WaitUntilFinished().ok());
  const nlohmann::json report = nlohmann::json::parse(std::ifstream(dir_ / "out" / "report.json"));
  EXPECT_EQ(report["rounds"][0]["clients"], nlohmann::json({"site-a", "site-c"}));
  EXPECT_TRUE(fs::exists(dir_ / "out" / "model" / "model.safetensors"));
}

TEST_F(DeadlineTest, TooFewClientsExtendTheDeadlineThenFailTheJob) {
  const std::vector<std::string> tokens = JoinAll();
  Commit(tokens[1]);
  // First deadline: one extension; uploads are still accepted until the new deadline.
  now_ = kStart + 1000 * kDeadlineSeconds + 1;
  absl::StatusOr<UploadTicket> late;
  for (int i = 0; i < 200; ++i) {  // the worker extends within ~100 ms of real time
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    late = job_->BeginUpload(tokens[0], "", 0);
    if (late.ok()) break;
  }
  ASSERT_TRUE(late.ok()) << late.status();
  job_->AbortUpload(*late);
  // Past the extended deadline with one commit: the job fails and says why.
  now_ = kStart + 2000 * kDeadlineSeconds + 2;
  const absl::Status finished = job_->WaitUntilFinished();
  EXPECT_FALSE(finished.ok());
  EXPECT_THAT(finished.message(), HasSubstr("only 1 of min_clients 2 committed after 1 deadline extensions"));
  EXPECT_THAT(finished.message(), HasSubstr("missing: site-a ("));
  EXPECT_THAT(finished.message(), HasSubstr("site-c ("));
  // Even a failed job writes its report, with the reason and the missing sites.
  const nlohmann::json report = nlohmann::json::parse(std::ifstream(dir_ / "out" / "report.json"));
  EXPECT_EQ(report["state"], "FAILED");
  EXPECT_THAT(report["failure"].get<std::string>(), HasSubstr("only 1 of min_clients 2"));
  EXPECT_THAT(report["missing_sites"].get<std::string>(), HasSubstr("site-a"));
  const absl::StatusOr<UploadTicket> after = job_->BeginUpload(tokens[2], "", 0);
  EXPECT_FALSE(after.ok());
}

TEST_F(DeadlineTest, LostSiteNoLongerHoldsUpTheRound) {
  const std::vector<std::string> tokens = JoinAll();
  Commit(tokens[0]);
  Commit(tokens[2]);
  // site-b goes silent; site-a and site-c keep heartbeating. Past the site timeout site-b is
  // lost, every live site has committed, and min_clients (2) is met: the round closes long
  // before its deadline.
  now_ = kStart + 1000 * 120 + 1000;
  for (int s : {0, 2}) {
    v1::HeartbeatRequest beat;
    beat.set_session_token(tokens[s]);
    beat.set_activity(v1::SITE_ACTIVITY_WAITING);
    ASSERT_TRUE(job_->Heartbeat(beat, "").ok());
  }
  now_ = kStart + 1000 * 121 + 1001;
  ASSERT_TRUE(job_->WaitUntilFinished().ok());
  EXPECT_TRUE(job_->SitesStatus()["site-b"]["lost"].get<bool>());
  const nlohmann::json report = nlohmann::json::parse(std::ifstream(dir_ / "out" / "report.json"));
  EXPECT_EQ(report["rounds"][0]["clients"], nlohmann::json({"site-a", "site-c"}));
  EXPECT_EQ(report["rounds"][0]["deadline_extensions"], 0);
}

TEST_F(DeadlineTest, JoinPhaseTimesOutNamingTheMissingSites) {
  StartJob([](ServerConfig* c) { c->join_timeout_seconds = 5; });
  ASSERT_TRUE(Join("site-b", "b").ok());
  now_ = kStart + 5001;
  const absl::Status finished = job_->WaitUntilFinished();
  EXPECT_THAT(finished.message(), HasSubstr("join phase: only 1 of min_clients 2 sites joined within "
                                            "join_timeout_seconds (5); missing: site-a (never joined), "
                                            "site-c (never joined)"));
}

TEST_F(DeadlineTest, SecondProcessOfASiteIsRefused) {
  ASSERT_TRUE(Join("site-a", "process-1").ok());
  const auto second = Join("site-a", "process-2");
  EXPECT_EQ(second.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(second.status().message(), HasSubstr("site site-a already has a live session"));
}

TEST(FederationJobStartupTest, UnwritableOutputIsFoundBeforeAnySiteJoins) {
  const fs::path dir = fs::temp_directory_path() / "fedprllm-unwritable-output";
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir / "a-file") << "not a directory";
  auto model = LlamaModel::Load(testing::BundledModel());
  ASSERT_TRUE(model.ok());
  ServerConfig config;
  config.insecure = true;
  config.allowed_clients = {"site-a"};
  config.model = testing::BundledModel();
  config.output_dir = (dir / "a-file" / "out").string();
  config.state_dir = (dir / "state").string();
  ASSERT_TRUE(config.Validate().ok());
  auto job = FederationJob::Create(config, *std::move(model), testing::BundledTokenizer());
  EXPECT_EQ(job.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(job.status().message(), HasSubstr("config key 'output_dir'"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace fedprllm
