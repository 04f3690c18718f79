// Crash safety end to end: a real fedprllm-server and three real fedprllm-client processes
// on 127.0.0.1 with mutual TLS. The server is killed with SIGKILL at a named point of a
// one-shot and of an iterative job (FEDPRLLM_CRASH_AT, common/crash_point.h: waiting for
// sites, mid-upload, at and around the commit point, mid-aggregation, mid-decision, between
// rounds, mid-model-write) and started again with the same config; the clients reconnect on
// their own. The pruned model must be byte for byte the one of the run that was never
// interrupted. Clients are killed mid-upload and restarted, with the same result; a client
// paused past the site timeout is declared lost and re-joins when resumed.
#include <signal.h>
#include <unistd.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/federation_files.h"

namespace fedprllm {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using namespace e2e;  // NOLINT: the harness is this test's vocabulary

// Short liveness settings so a killed process's session is taken over within seconds; a
// generous deadline so only liveness, never timing, decides who is counted.
constexpr char kServerExtra[] = "site_timeout_seconds: 3\nresume_grace_seconds: 60\n";
constexpr char kClientExtra[] = "heartbeat_seconds: 0.5\n";
constexpr double kClientRetrySeconds = 90;  // clients outlive any server restart here

struct KillCase {
  std::string strategy;
  std::string point;  // FEDPRLLM_CRASH_AT value for the server
};

void PrintTo(const KillCase& c, std::ostream* os) { *os << c.strategy << " killed at " << c.point; }

std::string CaseName(const ::testing::TestParamInfo<KillCase>& info) {
  std::string name = absl::StrCat(info.param.strategy, "_", info.param.point);
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
}

class CrashTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    files_ = FederationFiles::Make().release();
    ASSERT_TRUE(files_->ok()) << files_->error();
  }
  static void TearDownTestSuite() {
    if (!::testing::UnitTest::GetInstance()->Failed() && files_ != nullptr) fs::remove_all(files_->dir());
  }

  struct Run {
    std::string dir;
    int port = 0;
    std::unique_ptr<ChildProcess> server;
    std::vector<std::unique_ptr<ChildProcess>> clients;
  };

  // A server (with `server_env`) and the three sites (site i with client_env[i]).
  static Run Start(const std::string& name, const std::string& strategy, const std::vector<std::string>& server_env,
                   const std::vector<std::vector<std::string>>& client_env = {}, const std::string& extra = "") {
    Run run;
    run.port = FreePort();
    // "exact-secure": the exact strategy with secure aggregation.
    const bool secure = strategy == "exact-secure";
    run.dir = files_->WriteServerConfig(name, RunSettings{secure ? "exact" : strategy}, run.port,
                                        std::string(kServerExtra) + (secure ? "secure_aggregation: true\n" : "") + extra);
    run.server = StartServer(run.dir, run.port, server_env);
    for (size_t i = 0; i < kSites.size(); ++i) {
      run.clients.push_back(StartSite(run, i, i < client_env.size() ? client_env[i] : std::vector<std::string>{}));
    }
    return run;
  }

  static std::unique_ptr<ChildProcess> StartSite(const Run& run, size_t i, const std::vector<std::string>& env = {}) {
    const std::string config = files_->WriteClientConfig(run.dir, kSites[i], run.port, files_->Certs(), kModel, "",
                                                         kClientRetrySeconds, kClientExtra);
    return StartClient(config, run.dir + "/" + kSites[i] + ".log", env);
  }

  // Every client and the server exit 0; returns the pruned model's digest.
  static std::string Finish(Run& run) {
    for (size_t i = 0; i < run.clients.size(); ++i) {
      EXPECT_EQ(run.clients[i]->Wait(180), 0) << kSites[i] << ":\n" << run.clients[i]->Log();
    }
    EXPECT_EQ(run.server->Wait(60), 0) << run.server->Log();
    const nlohmann::json report = nlohmann::json::parse(ReadAll(run.dir + "/out/report.json"), nullptr, false);
    EXPECT_EQ(report.value("state", ""), "DONE");
    return Sha256OfFile(run.dir + "/out/model/model.safetensors");
  }

  // The digest of the pruned model of an uninterrupted run of `strategy`. ctest runs each
  // test in its own process, so it is computed once per build and shared through a file
  // named by the digests of the binaries and the model.
  static std::string Baseline(const std::string& strategy) {
    const std::string key = Sha256OfFile(FEDPRLLM_SERVER_BIN) + Sha256OfFile(FEDPRLLM_CLIENT_BIN) + Sha256OfFile(kModel);
    const std::string cache = absl::StrCat(fs::temp_directory_path().string(), "/fedprllm-baseline-",
                                           std::hash<std::string>()(key), "-", strategy);
    if (const std::string cached = ReadAll(cache); cached.size() == 64) return cached;
    Run run = Start("baseline-" + strategy, strategy, {});
    const std::string digest = Finish(run);
    EXPECT_EQ(digest.size(), 64u);
    if (!::testing::Test::HasFailure()) {
      WriteAll(cache + ".tmp" + std::to_string(::getpid()), digest);
      fs::rename(cache + ".tmp" + std::to_string(::getpid()), cache);
    }
    return digest;
  }

  static FederationFiles* files_;
};

FederationFiles* CrashTest::files_ = nullptr;

class ServerKillTest : public CrashTest, public ::testing::WithParamInterface<KillCase> {};

// SIGKILL at the point, restart with the same config: the job resumes where it was and ends
// with the uninterrupted run's model.
TEST_P(ServerKillTest, ResumesToTheSameModel) {
  const KillCase& c = GetParam();
  const std::string baseline = Baseline(c.strategy);
  ASSERT_FALSE(baseline.empty());
  Run run = Start(CaseName({c, 0}), c.strategy, {"FEDPRLLM_CRASH_AT=" + c.point});
  ASSERT_EQ(run.server->Wait(120), 128 + SIGKILL) << run.server->Log();
  ASSERT_THAT(run.server->Log(), HasSubstr(absl::StrCat("crash point ", c.point)));
  run.server = StartServer(run.dir, run.port);
  EXPECT_EQ(Finish(run), baseline) << run.server->Log();
  const std::string log = run.server->Log();
  EXPECT_THAT(log, HasSubstr("resuming from"));
  // Acknowledged commits were kept: no site's commit is in the report twice, each round has
  // every site once.
  const nlohmann::json report = nlohmann::json::parse(ReadAll(run.dir + "/out/report.json"));
  for (const auto& round : report["rounds"]) {
    if (c.strategy == "exact-secure") {  // one commit per round: the sum of every site
      EXPECT_EQ(round["clients"], nlohmann::json({"secure-sum"}));
      EXPECT_EQ(round["uploads"]["secure-sum"]["contributors"], nlohmann::json(kSites));
    } else {
      EXPECT_EQ(round["clients"], nlohmann::json(kSites));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    OneShot, ServerKillTest,
    ::testing::Values(KillCase{"one-shot", "joined#2"},              // waiting for sites
                      KillCase{"one-shot", "round-opened"},          // round open, nothing uploaded
                      KillCase{"one-shot", "upload-begun#2"},        // mid-upload
                      KillCase{"one-shot", "commit-point#1"},        // upload file written, not committed
                      KillCase{"one-shot", "committed#1"},           // after the first commit
                      KillCase{"one-shot", "torn-write:rounds/0/round.json#3"},  // commit record half-written
                      KillCase{"one-shot", "committed#3"},           // committed, not acknowledged
                      KillCase{"one-shot", "aggregating"},           // mid-aggregation
                      KillCase{"one-shot", "decision-written"},      // mid-decision
                      KillCase{"one-shot", "model-partial"},         // mid-model-write
                      KillCase{"one-shot", "report-written"}),       // model and report written, not DONE
    CaseName);

INSTANTIATE_TEST_SUITE_P(
    Iterative, ServerKillTest,
    ::testing::Values(KillCase{"iterative", "joined#1"},             // waiting for sites
                      KillCase{"iterative", "upload-begun#5"},       // mid-upload, round 1
                      KillCase{"iterative", "commit-point#7"},       // round 2
                      KillCase{"iterative", "committed#6"},          // last commit of round 1
                      KillCase{"iterative", "aggregating#3"},        // mid-aggregation, round 2
                      KillCase{"iterative", "decision-written#2"},   // mid-decision, round 1
                      KillCase{"iterative", "round-closed#3"},       // between rounds 2 and 3
                      KillCase{"iterative", "round-opened#4"},       // round 3 open, nothing uploaded
                      KillCase{"iterative", "model-written"}),       // model renamed, no report yet
    CaseName);

INSTANTIATE_TEST_SUITE_P(
    Exact, ServerKillTest,
    ::testing::Values(KillCase{"exact", "upload-begun#5"},           // statistics arriving, round 1
                      KillCase{"exact", "commit-point#7"},           // statistics file written, round 2
                      KillCase{"exact", "committed#6"},              // last commit of round 1
                      KillCase{"exact", "aggregating#3"},            // deciding round 2
                      KillCase{"exact", "round-closed#3"},           // between rounds 2 and 3
                      KillCase{"exact-secure", "round-opened#3"},    // mid secure aggregation, round 2
                      KillCase{"exact-secure", "commit-point#2"},    // round 1's sum written, not committed
                      KillCase{"exact-secure", "committed#1"}),      // round 0's sum committed, not closed
    CaseName);

// A site killed half-way through its upload and started again: it re-joins (once its old
// session is lost), uploads again and the job ends with the uninterrupted run's model.
TEST_F(CrashTest, ClientKilledMidUploadRejoins) {
  for (const auto& [strategy, point] :
       std::vector<std::pair<std::string, std::string>>{{"one-shot", "client-upload-half"},
                                                        {"iterative", "client-upload-half#3"}}) {
    SCOPED_TRACE(strategy);
    const std::string baseline = Baseline(strategy);
    Run run = Start("client-kill-" + strategy, strategy, {}, {{}, {"FEDPRLLM_CRASH_AT=" + point}, {}});
    ASSERT_EQ(run.clients[1]->Wait(120), 128 + SIGKILL) << run.clients[1]->Log();
    run.clients[1] = StartSite(run, 1);
    EXPECT_EQ(Finish(run), baseline);
    EXPECT_THAT(run.server->Log(), HasSubstr("client site-b joined again"));
  }
}

// A site paused (SIGSTOP) past the site timeout is declared lost, by name; the others go on
// without it (min_clients 2). Resumed, it re-joins and the job completes.
TEST_F(CrashTest, PausedSiteIsLostThenRejoins) {
  Run run = Start("paused", "iterative", {}, {}, "min_clients: 2\n");
  ASSERT_TRUE(WaitForText(run.dir + "/server.log", "round 1 opened", 120)) << run.server->Log();
  run.clients[2]->Signal(SIGSTOP);
  const bool lost = WaitForText(run.dir + "/server.log", "site site-c lost", 60);
  run.clients[2]->Signal(SIGCONT);
  ASSERT_TRUE(lost) << run.server->Log();
  Finish(run);
  const std::string log = run.server->Log();
  EXPECT_THAT(log, HasSubstr("client site-c joined again"));
  const nlohmann::json report = nlohmann::json::parse(ReadAll(run.dir + "/out/report.json"));
  int without_c = 0;
  for (const auto& round : report["rounds"]) {
    EXPECT_GE(round["clients"].size(), 2u);
    without_c += round["clients"] == nlohmann::json({"site-a", "site-b"}) ? 1 : 0;
  }
  EXPECT_GE(without_c, 1) << report["rounds"].dump();
}

// SIGTERM stops the server cleanly (exit 0, the resume point logged); started again, it
// finishes the job with the uninterrupted run's model.
// A client stopped with SIGTERM meanwhile exits 0 too, and its restart catches up.
TEST_F(CrashTest, SigtermThenResume) {
  const std::string baseline = Baseline("iterative");
  Run run = Start("sigterm", "iterative", {});
  ASSERT_TRUE(WaitForText(run.dir + "/server.log", "round 2 opened", 120)) << run.server->Log();
  run.server->Signal(SIGTERM);
  ASSERT_EQ(run.server->Wait(60), 0) << run.server->Log();
  EXPECT_THAT(run.server->Log(), HasSubstr("can be resumed at round"));
  run.clients[0]->Signal(SIGTERM);
  ASSERT_EQ(run.clients[0]->Wait(60), 0) << run.clients[0]->Log();
  EXPECT_THAT(run.clients[0]->Log(), HasSubstr("SIGTERM received: leaving the job"));
  run.server = StartServer(run.dir, run.port);
  run.clients[0] = StartSite(run, 0);
  EXPECT_EQ(Finish(run), baseline);
}

// What can be checked at startup is: a key that is not the certificate's, an output
// directory that cannot be written. Both stop the server at once, naming the config key.
TEST_F(CrashTest, ServerStartupChecksNameTheProblem) {
  const int port = FreePort();
  std::string run = files_->WriteServerConfig("bad-key", RunSettings{}, port);
  std::string yaml = ReadAll(run + "/server.yaml");
  const std::string server_key = files_->Certs() + "/server.key";
  yaml.replace(yaml.find(server_key), server_key.size(), files_->Certs() + "/site-a.key");
  WriteAll(run + "/server.yaml", yaml);
  auto bad_key = StartServer(run, port);
  EXPECT_EQ(bad_key->Wait(60), 1);
  EXPECT_THAT(bad_key->Log(), HasSubstr("config key 'tls.key'"));
  EXPECT_THAT(bad_key->Log(), Not(HasSubstr("cannot listen")));

  run = files_->WriteServerConfig("bad-output", RunSettings{}, port);
  WriteAll(run + "/not-a-dir", "x");
  yaml = ReadAll(run + "/server.yaml");
  yaml.replace(yaml.find(run + "/out"), run.size() + 4, run + "/not-a-dir/out");
  WriteAll(run + "/server.yaml", yaml);
  auto bad_output = StartServer(run, port);
  EXPECT_EQ(bad_output->Wait(60), 1);
  EXPECT_THAT(bad_output->Log(), HasSubstr("config key 'output_dir'"));
}

// Two processes with the same site certificate: while the first is live (here held in the
// join phase), the second is refused with a message that names the identity, and gives up
// after its retry_max_seconds.
TEST_F(CrashTest, SecondProcessWithTheSameCertificateIsRefused) {
  const int port = FreePort();
  const std::string run = files_->WriteServerConfig("duplicate", RunSettings{}, port, kServerExtra);
  auto server = StartServer(run, port);
  const std::string config =
      files_->WriteClientConfig(run, "site-a", port, files_->Certs(), kModel, "", kClientRetrySeconds, kClientExtra);
  auto first = StartClient(config, run + "/site-a.log");
  ASSERT_TRUE(WaitForText(run + "/server.log", "client site-a joined", 60)) << server->Log();
  const std::string copy = run + "/site-a-copy.yaml";
  WriteAll(copy, ReadAll(files_->WriteClientConfig(run, "site-a", port, files_->Certs(), kModel, "", 3, kClientExtra)));
  auto second = StartClient(copy, run + "/site-a-copy.log");
  EXPECT_EQ(second->Wait(60), 1) << second->Log();
  EXPECT_THAT(second->Log(), HasSubstr("site site-a already has a live session"));
  EXPECT_THAT(server->Log(), HasSubstr("client site-a rejected at Join: site site-a already has a live session"));
  EXPECT_EQ(first->Wait(0), -1) << "the first process must be unaffected:\n" << first->Log();
}

}  // namespace
}  // namespace fedprllm
