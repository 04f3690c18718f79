// Crash safety of FederationJob through its persistence seam (StateWriteHook): for every
// N, a job whose (N+1)-th state write fails, as if the process died there, is abandoned and
// a new job on the same directories resumes it. Every such run must end with exactly the
// model of the run that was never interrupted. Sites are driven through the job's own entry
// points with fixed pseudo-random masks, so only the persistence and replay are under test.
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/splitmix64.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/test_paths.h"
#include "server/federation_job.h"

namespace fedprllm {
namespace {

namespace fs = std::filesystem;
const std::vector<std::string> kSites = {"site-a", "site-b", "site-c"};

std::string ReadFileBytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Site `site`'s mask for `tensor`: about half the weights pruned, fixed per (site, tensor).
PackedMask SiteMask(const std::string& site, const std::string& tensor, const std::vector<int64_t>& shape) {
  uint64_t state = std::hash<std::string>()(site + "/" + tensor);
  PackedMask mask(shape);
  for (int64_t i = 0; i < mask.numel(); ++i) mask.Set(i, SplitMix64(&state) & 1);
  return mask;
}

class CrashReplayTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("fedprllm-replay-" + GetParam());
    fs::remove_all(dir_);
    auto model = LlamaModel::Load(testing::BundledModel());
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::make_unique<LlamaModel>(*std::move(model));
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }

  ServerConfig Config(const std::string& run) const {
    ServerConfig config;
    config.insecure = true;
    config.allowed_clients = kSites;
    config.model = testing::BundledModel();
    config.strategy = GetParam();
    config.output_dir = (dir_ / run / "out").string();
    config.state_dir = (dir_ / run / "state").string();
    config.poll_window_seconds = 1;
    EXPECT_TRUE(config.Validate().ok());
    return config;
  }

  // Runs the job on `run`'s directories as far as it goes: to DONE, or until `crashed` is
  // set (by the hook's simulated crash: the process is dead, nothing after it counts).
  // Returns whether it reached DONE.
  bool Drive(const std::string& run, StateWriteHook hook, const std::atomic<bool>& crashed) {
    auto created = FederationJob::Create(Config(run), *model_, testing::BundledTokenizer(), SystemClockMs, hook);
    if (!created.ok()) {
      ADD_FAILURE() << created.status();
      return false;
    }
    std::unique_ptr<FederationJob> job = *std::move(created);
    job->Start();
    std::map<std::string, std::string> tokens;
    for (const std::string& site : kSites) {
      v1::JoinRequest request;
      request.set_model_fingerprint(job->fingerprint());
      request.set_protocol_version(kProtocolVersion);
      request.set_instance_id(site);
      auto joined = job->Join(site, request);
      if (!joined.ok()) break;  // the crashed job may refuse; the resumed one must not
      tokens[site] = joined->session_token();
    }
    const int rounds = GetParam() == "one-shot" ? 1 : model_->config().num_hidden_layers;
    for (int round = 0; round < rounds && !job->finished() && !crashed; ++round) {
      for (const std::string& site : kSites) Upload(job.get(), tokens[site], site, round, crashed);
    }
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!job->finished() && !crashed && std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    const bool done = !crashed && job->finished() && job->WaitUntilFinished().ok();
    job->Stop();
    return done;
  }

  // One site's upload of `round`, retried until the round is open; gives up when the job
  // has finished (a crashed job fails).
  static void Upload(FederationJob* job, const std::string& token, const std::string& site, int round,
                     const std::atomic<bool>& crashed) {
    absl::StatusOr<UploadTicket> ticket;
    while (!job->finished() && !crashed) {
      ticket = job->BeginUpload(token, "", round);
      if (ticket.ok()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    if (!ticket.ok() || crashed) return;
    std::unique_ptr<MaskSetWriter> spool;
    if (!ticket->duplicate) {
      absl::StatusOr<std::unique_ptr<MaskSetWriter>> opened = job->NewUploadSpool(*ticket);
      if (!opened.ok()) return;  // the state directory is gone: the test's crash
      spool = *std::move(opened);
      for (const auto& [name, shape] : *ticket->tensors) {
        if (!spool->Add(name, SiteMask(site, name, shape)).ok()) return;
      }
    }
    std::promise<void> acked;
    job->CommitUpload(*std::move(ticket), std::move(spool), UploadStats{},
                      [&acked](absl::StatusOr<v1::UploadAck>) { acked.set_value(); });
    acked.get_future().wait();
  }

  fs::path dir_;
  std::unique_ptr<LlamaModel> model_;
};

TEST_P(CrashReplayTest, EveryCrashPointResumesToTheSameModel) {
  std::vector<std::string> writes;
  const std::atomic<bool> never(false);
  ASSERT_TRUE(Drive(
      "baseline",
      [&](const std::string& relative) {
        writes.push_back(relative);
        return absl::OkStatus();
      },
      never));
  const std::string baseline = ReadFileBytes(dir_ / "baseline" / "out" / "model" / "model.safetensors");
  ASSERT_FALSE(baseline.empty());
  ASSERT_GT(writes.size(), 10u);
  for (size_t crash = 0; crash < writes.size(); ++crash) {
    SCOPED_TRACE("crash before write " + std::to_string(crash) + " (" + writes[crash] + ")");
    const std::string run = "crash-" + std::to_string(crash);
    std::atomic<size_t> count{0};
    std::atomic<bool> crashed{false};
    EXPECT_FALSE(Drive(
        run,
        [&](const std::string&) {
          if (count++ < crash) return absl::OkStatus();
          crashed = true;
          return absl::InternalError("simulated crash");
        },
        crashed));
    EXPECT_TRUE(crashed) << "the simulated crash was never reached";
    ASSERT_TRUE(Drive(run, nullptr, never));
    EXPECT_EQ(ReadFileBytes(dir_ / run / "out" / "model" / "model.safetensors"), baseline);
    fs::remove_all(dir_ / run);
  }
  std::printf("[ replay   ] %s: %zu crash points replayed\n", GetParam().c_str(), writes.size());
}

INSTANTIATE_TEST_SUITE_P(Strategies, CrashReplayTest, ::testing::Values("one-shot", "iterative"),
                         [](const auto& info) { return info.param == "one-shot" ? "OneShot" : "Iterative"; });

TEST(JobRecoveryTest, RefusesStateOfAnotherJobAndCorruptFiles) {
  const fs::path dir = fs::temp_directory_path() / "fedprllm-recovery-refusals";
  fs::remove_all(dir);
  auto store = StateStore::Open(dir.string(), "job-x");
  ASSERT_TRUE(store.ok());
  const nlohmann::json manifest = {{"job_id", "job-x"},      {"protocol_version", 1}, {"model_fingerprint", "ab"},
                                   {"config", {{"k", 1}}},   {"num_rounds", 1}};
  ASSERT_TRUE(store->WriteJson("manifest.json", manifest).ok());
  ASSERT_TRUE(store->WriteJson("job.json", {{"state", "RUNNING"}}).ok());
  nlohmann::json other = manifest;
  other["model_fingerprint"] = "cd";
  EXPECT_THAT(ReadJobState(*store, other).status().message(), ::testing::HasSubstr("model_fingerprint"));
  // A commit record whose upload file does not match its digest.
  ASSERT_TRUE(store->WriteJson(StateStore::RoundFile(0),
                               {{"round", 0}, {"layers", {0}}, {"state", "OPEN"}, {"opened_unix_ms", 1},
                                {"deadline_unix_ms", 2}, {"extensions", 0},
                                {"commits", {{{"client", "site-a"}, {"masks_sha256", "00"}}}}})
                  .ok());
  ASSERT_TRUE(store->WriteBytes(StateStore::UploadFile(0, "site-a"), "bytes").ok());
  auto saved = ReadJobState(*store, manifest);
  ASSERT_TRUE(saved.ok()) << saved.status();
  ASSERT_EQ(saved->rounds.size(), 1u);
  const auto upload = OpenCommittedUpload(*store, 0, saved->rounds[0].commits[0]);
  EXPECT_EQ(upload.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(upload.status().message(), ::testing::HasSubstr("SHA-256 differs from its commit record"));
  // A CLOSED round without its decision.
  ASSERT_TRUE(store->WriteJson(StateStore::RoundFile(0),
                               {{"round", 0}, {"layers", {0}}, {"state", "CLOSED"}, {"opened_unix_ms", 1},
                                {"deadline_unix_ms", 2}, {"extensions", 0}, {"commits", nlohmann::json::array()}})
                  .ok());
  EXPECT_THAT(ReadJobState(*store, manifest).status().message(), ::testing::HasSubstr("decision.masks is missing"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace fedprllm
