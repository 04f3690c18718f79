// fedprllm-admin's library against an in-process fake FedPrLLMAdmin service: each command's
// request fields, its human and JSON output, error texts and exit statuses; the config
// loader; the usage checks; mutual TLS with the test certificates.
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <unistd.h>

#include <deque>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/civil_time.h"
#include "admin/admin_client.h"
#include "admin/admin_commands.h"
#include "admin/admin_config.h"
#include "admin/admin_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/fedprllm.grpc.pb.h"
#include "tls/test_certs.h"
#include "tls/test_server.h"

// Flags for CheckFlagNames (the binary's own flags live in admin_main.cc, not linked here).
ABSL_FLAG(bool, admin_test_switch, false, "test only");
ABSL_FLAG(std::string, admin_test_text, "", "test only");

namespace fedprllm {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;

const absl::Time kNow = absl::FromCivil(absl::CivilSecond(2024, 5, 1, 14, 5, 0), absl::UTCTimeZone());

int64_t UnixMs(int h, int m, int s) {
  return absl::ToUnixMillis(absl::FromCivil(absl::CivilSecond(2024, 5, 1, h, m, s), absl::UTCTimeZone()));
}

// What the fake answers and what it was asked. Tests set the answers before a call and read
// the requests after it.
struct FakeState {
  grpc::Status error = grpc::Status::OK;  // returned by every RPC when not OK
  v1::SubmitJobResponse submit;
  v1::ListJobsResponse jobs;
  std::deque<v1::JobStatusResponse> statuses;  // popped per call; the last one repeats
  v1::AbortJobResponse abort;
  v1::ListSitesResponse sites;
  std::vector<v1::JobLogLines> log;

  std::vector<v1::SubmitJobRequest> submit_requests;
  int list_jobs_calls = 0;
  std::vector<v1::JobStatusRequest> status_requests;
  std::vector<v1::AbortJobRequest> abort_requests;
  int list_sites_calls = 0;
  std::vector<v1::JobLogRequest> log_requests;
  std::vector<std::string> peer_common_names;
};

class FakeAdmin final : public v1::FedPrLLMAdmin::Service {
 public:
  FakeState Get() {
    absl::MutexLock lock(&mu_);
    return state_;
  }
  template <typename F>
  void Set(F change) {
    absl::MutexLock lock(&mu_);
    change(state_);
  }

  grpc::Status SubmitJob(grpc::ServerContext* context, const v1::SubmitJobRequest* request,
                         v1::SubmitJobResponse* response) override {
    absl::MutexLock lock(&mu_);
    Record(context);
    state_.submit_requests.push_back(*request);
    *response = state_.submit;
    return state_.error;
  }
  grpc::Status ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest*,
                        v1::ListJobsResponse* response) override {
    absl::MutexLock lock(&mu_);
    Record(context);
    ++state_.list_jobs_calls;
    *response = state_.jobs;
    return state_.error;
  }
  grpc::Status GetJobStatus(grpc::ServerContext* context, const v1::JobStatusRequest* request,
                            v1::JobStatusResponse* response) override {
    absl::MutexLock lock(&mu_);
    Record(context);
    state_.status_requests.push_back(*request);
    if (!state_.statuses.empty()) {
      *response = state_.statuses.front();
      if (state_.statuses.size() > 1) state_.statuses.pop_front();
    }
    return state_.error;
  }
  grpc::Status AbortJob(grpc::ServerContext* context, const v1::AbortJobRequest* request,
                        v1::AbortJobResponse* response) override {
    absl::MutexLock lock(&mu_);
    Record(context);
    state_.abort_requests.push_back(*request);
    *response = state_.abort;
    return state_.error;
  }
  grpc::Status ListSites(grpc::ServerContext* context, const v1::ListSitesRequest*,
                         v1::ListSitesResponse* response) override {
    absl::MutexLock lock(&mu_);
    Record(context);
    ++state_.list_sites_calls;
    *response = state_.sites;
    return state_.error;
  }
  grpc::Status StreamJobLog(grpc::ServerContext* context, const v1::JobLogRequest* request,
                            grpc::ServerWriter<v1::JobLogLines>* writer) override {
    std::vector<v1::JobLogLines> log;
    grpc::Status error;
    {
      absl::MutexLock lock(&mu_);
      Record(context);
      state_.log_requests.push_back(*request);
      log = state_.log;
      error = state_.error;
    }
    if (!error.ok()) return error;
    for (const auto& lines : log) writer->Write(lines);
    return grpc::Status::OK;
  }

 private:
  void Record(grpc::ServerContext* context) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (const auto& cn : context->auth_context()->FindPropertyValues("x509_common_name")) {
      state_.peer_common_names.emplace_back(cn.data(), cn.size());
    }
  }

  absl::Mutex mu_;
  FakeState state_ ABSL_GUARDED_BY(mu_);
};

// The fake (and gRPC's default health service) on 127.0.0.1, plaintext or mutual TLS.
class FakeServer {
 public:
  explicit FakeServer(const std::string& cert_dir = "") {
    std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
    if (!cert_dir.empty()) {
      grpc::SslServerCredentialsOptions options(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
      options.pem_root_certs = testing::ReadAll(cert_dir + "/ca.crt");
      options.pem_key_cert_pairs.push_back(
          {testing::ReadAll(cert_dir + "/server.key"), testing::ReadAll(cert_dir + "/server.crt")});
      credentials = grpc::SslServerCredentials(options);
    }
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", credentials, &port_);
    builder.RegisterService(&fake_);
    server_ = builder.BuildAndStart();
  }
  ~FakeServer() {
    if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now());
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  FakeAdmin& fake() { return fake_; }
  grpc::Server* server() { return server_.get(); }

 private:
  FakeAdmin fake_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

struct Result {
  int exit_code = -1;
  std::string out;
  std::string err;
};

class AdminCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NE(server_.server(), nullptr);
    config_.server_address = server_.address();
    config_.insecure = true;
    client_ = std::make_unique<AdminClient>(grpc::CreateChannel(server_.address(), grpc::InsecureChannelCredentials()),
                                            config_, absl::Seconds(10));
    options_.now = [] { return kNow; };
    options_.zone = absl::UTCTimeZone();
    options_.sleep = [this](absl::Duration d) {
      sleeps_.push_back(d);
      return true;
    };
  }

  // Runs `args` (command and arguments) with options_, which must pass ParseAdminCommand.
  Result Run(const std::vector<std::string>& args) {
    Result result;
    absl::StatusOr<AdminCommand> command = ParseAdminCommand(args, options_);
    EXPECT_TRUE(command.ok()) << command.status();
    if (!command.ok()) return result;
    std::ostringstream out, err;
    result.exit_code = RunAdminCommand(*command, options_, *client_, out, err);
    result.out = out.str();
    result.err = err.str();
    return result;
  }

  // Runs with --json and parses stdout as one JSON document.
  json RunJson(const std::vector<std::string>& args) {
    options_.json = true;
    const Result result = Run(args);
    options_.json = false;
    EXPECT_EQ(result.exit_code, 0) << result.err;
    EXPECT_EQ(result.err, "");
    json parsed = json::parse(result.out, nullptr, false);
    EXPECT_FALSE(parsed.is_discarded()) << result.out;
    return parsed;
  }

  FakeAdmin& fake() { return server_.fake(); }

  FakeServer server_;
  AdminConfig config_;
  std::unique_ptr<AdminClient> client_;
  AdminOptions options_;
  std::vector<absl::Duration> sleeps_;
};

v1::JobSummary Job(const std::string& name, v1::JobState state) {
  v1::JobSummary job;
  job.set_name(name);
  job.set_job_id("job-" + name);
  job.set_state(state);
  job.set_model_name("stories260K");
  job.set_strategy("fedprllm");
  job.add_sites("site-a");
  job.add_sites("site-b");
  job.set_submitted_unix_ms(UnixMs(14, 3, 22));
  job.set_rounds_total(5);
  return job;
}

// The line of `text` that contains `needle` ("" if none).
std::string LineWith(const std::string& text, const std::string& needle) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (absl::StrContains(line, needle)) return line;
  }
  return "";
}

int Count(const std::string& text, const std::string& needle) {
  int n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + needle.size())) ++n;
  return n;
}

class TempFile {
 public:
  explicit TempFile(const std::string& text) {
    char name[] = "/tmp/fedprllm-admin-test-XXXXXX";
    const int fd = ::mkstemp(name);
    EXPECT_GE(fd, 0);
    ::close(fd);
    path_ = name;
    std::ofstream(path_, std::ios::binary) << text;
  }
  ~TempFile() { std::filesystem::remove(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST_F(AdminCommandTest, SubmitSendsTheFileTextAndPrintsTheQueuePosition) {
  // Exact bytes: no final newline, trailing blanks, UTF-8, a comment.
  const std::string text = "name: nightly  \nmodel_name: stories260K\n# grüße\nrounds: 5";
  TempFile file(text);
  fake().Set([](FakeState& s) {
    *s.submit.mutable_job() = Job("nightly", v1::JOB_STATE_QUEUED);
    s.submit.set_queue_position(2);
  });
  const Result result = Run({"submit", file.path()});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "submitted job nightly (queue position 2)\n");
  const FakeState state = fake().Get();
  ASSERT_EQ(state.submit_requests.size(), 1u);
  EXPECT_EQ(state.submit_requests[0].job_yaml(), text);
  EXPECT_EQ(state.submit_requests[0].source(), file.path());

  const json j = RunJson({"submit", file.path()});
  EXPECT_EQ(j["queue_position"], 2);
  EXPECT_EQ(j["job"]["name"], "nightly");
  EXPECT_EQ(j["job"]["state"], "JOB_STATE_QUEUED");
}

TEST_F(AdminCommandTest, SubmitOfAMissingFileSendsNothing) {
  const Result result = Run({"submit", "/nonexistent/job.yaml"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_EQ(result.out, "");
  EXPECT_THAT(result.err, HasSubstr("fedprllm-admin: error: NOT_FOUND: cannot read job file /nonexistent/job.yaml"));
  EXPECT_TRUE(fake().Get().submit_requests.empty());
}

TEST_F(AdminCommandTest, JobsPrintsAnAlignedTable) {
  fake().Set([](FakeState& s) {
    v1::JobSummary running = Job("nightly", v1::JOB_STATE_RUNNING);
    running.set_rounds_closed(2);
    running.set_started_unix_ms(UnixMs(14, 3, 30));
    v1::JobSummary failed = Job("a-much-longer-job-name", v1::JOB_STATE_FAILED);
    failed.set_submitted_unix_ms(absl::ToUnixMillis(kNow - absl::Hours(48)));
    failed.set_started_unix_ms(UnixMs(1, 0, 0));
    failed.set_finished_unix_ms(UnixMs(2, 0, 0));
    failed.set_reason("site-b declined: no model stories260K");
    *s.jobs.add_jobs() = running;
    *s.jobs.add_jobs() = failed;
  });
  const Result result = Run({"jobs"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  const std::string header = LineWith(result.out, "NAME");
  const std::string row = LineWith(result.out, "nightly");
  const std::string row2 = LineWith(result.out, "a-much-longer-job-name");
  EXPECT_EQ(header.find("NAME"), 0u);
  for (const char* column : {"STATE", "ROUNDS", "SITES", "SUBMITTED", "STARTED/ENDED", "REASON"}) {
    EXPECT_THAT(header, HasSubstr(column));
  }
  EXPECT_EQ(row.find("running"), header.find("STATE")) << result.out;
  EXPECT_EQ(row2.find("failed"), header.find("STATE")) << result.out;
  EXPECT_EQ(row.find("2/5"), header.find("ROUNDS"));
  EXPECT_EQ(row.find("site-a,site-b"), header.find("SITES"));
  EXPECT_EQ(row.find("14:03:22"), header.find("SUBMITTED"));
  EXPECT_EQ(row.find("14:03:30 / -"), header.find("STARTED/ENDED"));
  EXPECT_THAT(row2, HasSubstr("2024-04-29 14:05:00"));
  EXPECT_THAT(row2, HasSubstr("01:00:00 / 02:00:00"));
  EXPECT_EQ(row2.find("site-b declined: no model stories260K"), header.find("REASON"));
  EXPECT_EQ(fake().Get().list_jobs_calls, 1);

  const json j = RunJson({"jobs"});
  ASSERT_EQ(j["jobs"].size(), 2u);
  EXPECT_EQ(j["jobs"][0]["name"], "nightly");
  EXPECT_EQ(j["jobs"][0]["rounds_closed"], 2);
  EXPECT_EQ(j["jobs"][0]["submitted_unix_ms"], std::to_string(UnixMs(14, 3, 22)));  // int64: a string in proto3 JSON
  EXPECT_EQ(j["jobs"][1]["state"], "JOB_STATE_FAILED");
  EXPECT_EQ(j["jobs"][1]["reason"], "site-b declined: no model stories260K");
}

TEST_F(AdminCommandTest, JobsWithNoneSaysSo) {
  EXPECT_EQ(Run({"jobs"}).out, "no jobs\n");
  EXPECT_EQ(RunJson({"jobs"}), json::parse(R"({"jobs": []})"));
}

const char kDetail[] = R"({"job": "nightly", "job_id": "job-nightly", "state": "RUNNING", "round": 2, "rounds": 5,
  "round_state": "OPEN", "committed": 1, "expected": 3, "min": 2, "failure": "", "deadline_in_seconds": 40, "eta_seconds": 125,
  "sites": [
    {"site": "site-a", "state": "committed", "layer": -1, "layers_done": 6, "layers_total": 6,
     "last_seen_seconds_ago": 1, "bytes": 1572864, "commit_seconds": 3.4, "detail": ""},
    {"site": "site-b", "state": "calibrating", "layer": 3, "layers_done": 3, "layers_total": 6,
     "last_seen_seconds_ago": 2.2, "bytes": 0, "commit_seconds": null, "detail": "layer 3 of 6"},
    {"site": "site-c", "state": "not joined", "layer": -1, "layers_done": 0, "layers_total": 0,
     "last_seen_seconds_ago": -1, "bytes": 0, "commit_seconds": null, "detail": ""}]})";

TEST_F(AdminCommandTest, StatusPrintsTheSummaryAndAPerSiteTable) {
  fake().Set([](FakeState& s) {
    v1::JobStatusResponse response;
    *response.mutable_job() = Job("nightly", v1::JOB_STATE_RUNNING);
    response.mutable_job()->set_started_unix_ms(UnixMs(14, 3, 30));
    response.set_detail_json(kDetail);
    s.statuses = {response};
  });
  const Result result = Run({"status", "nightly"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("job        nightly\n"));
  EXPECT_THAT(result.out, HasSubstr("state      running\n"));
  EXPECT_THAT(result.out, HasSubstr("sites      site-a, site-b\n"));
  EXPECT_THAT(result.out, HasSubstr("submitted  14:03:22 (1 min 38 s ago)\n"));
  EXPECT_THAT(result.out, HasSubstr("started    14:03:30 (1 min 30 s ago)\n"));
  EXPECT_THAT(result.out,
              HasSubstr("round      2 of 5 (open): 1/3 sites committed (min 2), deadline in 40 s, eta 2 min 5 s\n"));
  const std::string header = LineWith(result.out, "SITE ");
  const std::string a = LineWith(result.out, "site-a  ");
  const std::string b = LineWith(result.out, "site-b  ");
  const std::string c = LineWith(result.out, "site-c  ");
  EXPECT_EQ(a.find("committed"), header.find("STATE")) << result.out;
  EXPECT_EQ(a.find("6/6"), header.find("LAYERS"));
  EXPECT_EQ(a.find("1 s ago"), header.find("LAST-SEEN"));
  EXPECT_EQ(a.find("1.5 MiB"), header.find("BYTES"));
  EXPECT_EQ(a.find("3.4 s"), header.find("COMMIT"));
  EXPECT_EQ(b.find("calibrating"), header.find("STATE"));
  EXPECT_EQ(b.find("3 "), header.find("LAYER"));
  EXPECT_EQ(b.find("2 s ago"), header.find("LAST-SEEN"));
  EXPECT_EQ(b.find("layer 3 of 6"), header.find("DETAIL"));
  EXPECT_EQ(c.find("not joined"), header.find("STATE"));
  EXPECT_EQ(c.find("never"), header.find("LAST-SEEN"));
  ASSERT_EQ(fake().Get().status_requests.size(), 1u);
  EXPECT_EQ(fake().Get().status_requests[0].name(), "nightly");

  const json j = RunJson({"status", "nightly"});
  EXPECT_EQ(j["job"]["name"], "nightly");
  EXPECT_EQ(j["job"]["state"], "JOB_STATE_RUNNING");
  ASSERT_TRUE(j["detail_json"].is_object()) << j.dump();
  EXPECT_EQ(j["detail_json"]["round"], 2);
  EXPECT_EQ(j["detail_json"]["sites"][1]["state"], "calibrating");
  EXPECT_EQ(j["detail_json"]["sites"][1]["layer"], 3);
}

TEST_F(AdminCommandTest, StatusWithoutANameAsksForTheServersChoice) {
  fake().Set([](FakeState& s) {
    v1::JobStatusResponse response;
    *response.mutable_job() = Job("last", v1::JOB_STATE_DONE);
    response.set_detail_json("{}");
    s.statuses = {response};
  });
  const Result result = Run({"status"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("state      done\n"));
  EXPECT_THAT(result.out, Not(HasSubstr("SITE")));
  EXPECT_EQ(fake().Get().status_requests.at(0).name(), "");
  EXPECT_EQ(RunJson({"status"})["detail_json"], json::object());
}

TEST_F(AdminCommandTest, StatusToleratesAnOddDetail) {
  for (const std::string detail :
       {R"({"round": "two", "sites": [{"site": "a", "layer": "x", "bytes": "many"}, 5, null, []]})", "not json", "[]",
        R"({"sites": {"site": "a"}, "eta_seconds": null})", ""}) {
    SCOPED_TRACE(detail);
    fake().Set([&](FakeState& s) {
      v1::JobStatusResponse response;
      *response.mutable_job() = Job("odd", v1::JOB_STATE_RUNNING);
      response.set_detail_json(detail);
      s.statuses = {response};
    });
    const Result result = Run({"status", "odd"});
    EXPECT_EQ(result.exit_code, 0) << result.err;
    EXPECT_THAT(result.out, HasSubstr("job        odd\n"));
    options_.json = true;
    const Result j = Run({"status", "odd"});
    options_.json = false;
    EXPECT_EQ(j.exit_code, 0);
    EXPECT_FALSE(json::parse(j.out, nullptr, false).is_discarded()) << j.out;
  }
  fake().Set(
      [&](FakeState& s) { s.statuses.front().set_detail_json(R"({"round": "two", "sites": [{"site": "a"}]})"); });
  const Result result = Run({"status", "odd"});
  EXPECT_THAT(result.out, HasSubstr("round      - of -: -/- sites committed, eta unknown\n"));
  EXPECT_THAT(result.out, Not(HasSubstr("phase")));
  // Site "a"'s row: every cell but its name is "-" (DETAIL empty).
  const size_t row = result.out.find("\na ");
  ASSERT_NE(row, std::string::npos) << result.out;
  const std::string line = result.out.substr(row + 1, result.out.find('\n', row + 1) - row - 1);
  EXPECT_EQ(line.find_first_not_of("a- "), std::string::npos) << line;
  EXPECT_EQ(Count(line, "-"), 6) << line;
}

TEST(AdminFormatTest, DetailBeforeTheFirstRoundAndWhileWritingTheModel) {
  EXPECT_EQ(FormatJobDetail(json::parse(R"({"state": "WAITING_FOR_SITES", "round": -1, "rounds": 4,
      "round_state": "", "committed": 0, "expected": 2, "deadline_in_seconds": null, "eta_seconds": null,
      "sites": []})")),
            "phase      waiting for sites\nround      none open, 4 in all: 0/2 sites committed, eta unknown\n");
  EXPECT_EQ(FormatJobDetail(json::parse(R"({"state": "WRITING_MODEL", "failure": "disk full"})")),
            "phase      writing model\nfailure    disk full\n");
  EXPECT_EQ(FormatJobDetail(json::parse(R"({"state": "RUNNING"})")), "");
  EXPECT_EQ(FormatJobDetail(json::parse("[1, 2]")), "");
}

TEST_F(AdminCommandTest, WatchRepeatsUntilTheJobEndsAndStaysOnTheSameJob) {
  fake().Set([](FakeState& s) {
    v1::JobStatusResponse running;
    *running.mutable_job() = Job("nightly", v1::JOB_STATE_RUNNING);
    v1::JobStatusResponse done = running;
    done.mutable_job()->set_state(v1::JOB_STATE_DONE);
    s.statuses = {running, running, done};
  });
  options_.watch = true;
  options_.interval = absl::Seconds(3);
  options_.clear_screen = true;
  const Result result = Run({"status"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(Count(result.out, "job        nightly\n"), 3);
  EXPECT_EQ(Count(result.out, "state      running\n"), 2);
  EXPECT_EQ(Count(result.out, "state      done\n"), 1);
  EXPECT_EQ(Count(result.out, "\033[H\033[2J"), 3);
  EXPECT_EQ(sleeps_, std::vector<absl::Duration>(2, absl::Seconds(3)));
  const FakeState state = fake().Get();
  ASSERT_EQ(state.status_requests.size(), 3u);
  EXPECT_EQ(state.status_requests[0].name(), "");
  EXPECT_EQ(state.status_requests[1].name(), "nightly");
  EXPECT_EQ(state.status_requests[2].name(), "nightly");
}

TEST_F(AdminCommandTest, WatchWithJsonPrintsOneDocumentPerLineAndNoClearScreen) {
  fake().Set([](FakeState& s) {
    v1::JobStatusResponse running;
    *running.mutable_job() = Job("nightly", v1::JOB_STATE_RUNNING);
    running.set_detail_json(kDetail);
    v1::JobStatusResponse aborted = running;
    aborted.mutable_job()->set_state(v1::JOB_STATE_ABORTED);
    s.statuses = {running, aborted};
  });
  options_.watch = options_.json = options_.clear_screen = true;
  const Result result = Run({"status", "nightly"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  std::istringstream in(result.out);
  std::vector<std::string> states;
  for (std::string line; std::getline(in, line);) {
    const json j = json::parse(line, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << line;
    states.push_back(j["job"]["state"]);
    EXPECT_EQ(j["detail_json"]["expected"], 3);
  }
  EXPECT_EQ(states, (std::vector<std::string>{"JOB_STATE_RUNNING", "JOB_STATE_ABORTED"}));
}

TEST_F(AdminCommandTest, WatchStopsWhenInterrupted) {
  fake().Set([](FakeState& s) {
    v1::JobStatusResponse running;
    *running.mutable_job() = Job("nightly", v1::JOB_STATE_RUNNING);
    s.statuses = {running};
  });
  options_.watch = true;
  int sleeps = 0;
  options_.sleep = [&](absl::Duration) { return ++sleeps < 4; };
  const Result result = Run({"status", "nightly"});
  EXPECT_EQ(result.exit_code, 0);
  EXPECT_EQ(sleeps, 4);
  EXPECT_EQ(fake().Get().status_requests.size(), 4u);
}

TEST_F(AdminCommandTest, WatchOutlivesAServerThatIsBrieflyUnavailable) {
  fake().Set([](FakeState& s) {
    v1::JobStatusResponse running;
    *running.mutable_job() = Job("nightly", v1::JOB_STATE_RUNNING);
    v1::JobStatusResponse done = running;
    done.mutable_job()->set_state(v1::JOB_STATE_DONE);
    s.statuses = {running, done};
  });
  options_.watch = true;
  int sleeps = 0;
  // The second poll fails UNAVAILABLE; the third gets the next answer.
  options_.sleep = [&](absl::Duration) {
    ++sleeps;
    fake().Set([&](FakeState& s) {
      s.error = sleeps == 1 ? grpc::Status(grpc::UNAVAILABLE, "restarting") : grpc::Status::OK;
    });
    return sleeps < 10;
  };
  const Result result = Run({"status", "nightly"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(sleeps, 2);
  EXPECT_THAT(result.err, HasSubstr("fedprllm-admin: warning: UNAVAILABLE: cannot reach fedprllm-server at " +
                                    server_.address() + ": restarting (trying again in 2s)"));
  EXPECT_THAT(result.out, HasSubstr("state      done\n"));
  // Before the first answer, UNAVAILABLE is an error even with --watch.
  fake().Set([](FakeState& s) { s.error = grpc::Status(grpc::UNAVAILABLE, "down"); });
  EXPECT_EQ(Run({"status", "nightly"}).exit_code, 1);
}

TEST_F(AdminCommandTest, AbortSendsNameAndReasonAndPrintsTheSummary) {
  fake().Set([](FakeState& s) {
    *s.abort.mutable_job() = Job("nightly", v1::JOB_STATE_ABORTED);
    s.abort.mutable_job()->set_reason("operator: wrong model");
  });
  options_.reason = "wrong model";
  const Result result = Run({"abort", "nightly"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("job        nightly\n"));
  EXPECT_THAT(result.out, HasSubstr("state      aborted\n"));
  EXPECT_THAT(result.out, HasSubstr("reason     operator: wrong model\n"));
  const FakeState state = fake().Get();
  ASSERT_EQ(state.abort_requests.size(), 1u);
  EXPECT_EQ(state.abort_requests[0].name(), "nightly");
  EXPECT_EQ(state.abort_requests[0].reason(), "wrong model");
  const json j = RunJson({"abort", "nightly"});
  EXPECT_EQ(j["job"]["state"], "JOB_STATE_ABORTED");
}

TEST_F(AdminCommandTest, SitesPrintsATable) {
  fake().Set([](FakeState& s) {
    v1::SiteSummary* a = s.sites.add_sites();
    a->set_identity("site-a");
    a->set_connected(true);
    a->set_last_seen_seconds_ago(3);
    a->set_job("nightly");
    a->set_activity("calibrating layer 3 of round 0 (job nightly)");
    v1::SiteSummary* b = s.sites.add_sites();
    b->set_identity("site-b");
    b->set_last_seen_seconds_ago(-1);
  });
  const Result result = Run({"sites"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  const std::string header = LineWith(result.out, "IDENTITY");
  const std::string a = LineWith(result.out, "site-a");
  const std::string b = LineWith(result.out, "site-b");
  EXPECT_EQ(a.find("yes"), header.find("CONNECTED")) << result.out;
  EXPECT_EQ(a.find("3 s ago"), header.find("LAST-SEEN"));
  EXPECT_EQ(a.find("nightly"), header.find("JOB"));
  EXPECT_EQ(a.find("calibrating layer 3"), header.find("ACTIVITY"));
  EXPECT_EQ(b.find("no"), header.find("CONNECTED"));
  EXPECT_EQ(b.find("never"), header.find("LAST-SEEN"));
  const json j = RunJson({"sites"});
  ASSERT_EQ(j["sites"].size(), 2u);
  EXPECT_EQ(j["sites"][0]["connected"], true);
  EXPECT_EQ(j["sites"][1]["connected"], false);  // present although the default
  EXPECT_EQ(j["sites"][1]["last_seen_seconds_ago"], -1);
}

TEST_F(AdminCommandTest, LogsPrintsTheStreamedLines) {
  fake().Set([](FakeState& s) {
    v1::JobLogLines first;
    first.set_first_line(5);
    first.add_lines("14:03:30 job nightly started");
    first.add_lines("14:03:31 site-a joined");
    v1::JobLogLines second;
    second.set_first_line(7);
    second.add_lines("14:04:00 round 0 closed");
    s.log = {first, second};
  });
  options_.follow = true;
  options_.from_line = 5;
  Result result = Run({"logs", "nightly"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "14:03:30 job nightly started\n14:03:31 site-a joined\n14:04:00 round 0 closed\n");
  FakeState state = fake().Get();
  ASSERT_EQ(state.log_requests.size(), 1u);
  EXPECT_EQ(state.log_requests[0].name(), "nightly");
  EXPECT_TRUE(state.log_requests[0].follow());
  EXPECT_EQ(state.log_requests[0].from_line(), 5);

  // --follow --json: one document per message.
  options_.json = true;
  result = Run({"logs", "nightly"});
  EXPECT_EQ(Count(result.out, "\n"), 2) << result.out;
  EXPECT_EQ(json::parse(LineWith(result.out, "round 0"))["first_line"], "7");

  // --json alone: the whole stream as one document.
  options_.follow = false;
  const json j = RunJson({"logs", "nightly"});
  EXPECT_EQ(j["first_line"], "5");
  ASSERT_EQ(j["lines"].size(), 3u);
  EXPECT_EQ(j["lines"][2], "14:04:00 round 0 closed");
  EXPECT_FALSE(fake().Get().log_requests.back().follow());
}

TEST_F(AdminCommandTest, HealthExitsZeroOnlyWhenServing) {
  Result result = Run({"health"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "SERVING\n");
  EXPECT_EQ(RunJson({"health"}), json::parse(R"({"status": "SERVING"})"));

  server_.server()->GetHealthCheckService()->SetServingStatus(false);
  result = Run({"health"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_EQ(result.out, "NOT_SERVING\n");
}

TEST_F(AdminCommandTest, PermissionDeniedComesWithTheAdminsListHint) {
  fake().Set([](FakeState& s) { s.error = grpc::Status(grpc::PERMISSION_DENIED, "identity 'ops' is not an admin"); });
  for (const auto& args : std::vector<std::vector<std::string>>{{"jobs"}, {"sites"}, {"status", "x"}, {"logs", "x"}}) {
    SCOPED_TRACE(args[0]);
    options_.json = true;  // errors never go to stdout, JSON or not
    const Result result = Run(args);
    EXPECT_EQ(result.exit_code, 1);
    EXPECT_EQ(result.out, "");
    EXPECT_THAT(result.err, HasSubstr("fedprllm-admin: error: PERMISSION_DENIED: identity 'ops' is not an admin\n"));
    EXPECT_THAT(result.err, HasSubstr(std::string("fedprllm-admin: hint: ") + kAdminsListHint));
  }
}

TEST_F(AdminCommandTest, OtherErrorsPassThroughWithoutAHint) {
  fake().Set([](FakeState& s) { s.error = grpc::Status(grpc::NOT_FOUND, "no job named 'x'"); });
  const Result result = Run({"abort", "x"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_EQ(result.err, "fedprllm-admin: error: NOT_FOUND: no job named 'x'\n");
}

TEST(AdminClientTest, UnavailableNamesTheAddress) {
  AdminConfig config;
  config.server_address = "127.0.0.1:1";
  config.insecure = true;
  absl::StatusOr<std::unique_ptr<AdminClient>> client = AdminClient::Connect(config, absl::Seconds(5));
  ASSERT_TRUE(client.ok()) << client.status();
  AdminOptions options;
  std::ostringstream out, err;
  EXPECT_EQ(RunAdminCommand({"jobs", {}}, options, **client, out, err), 1);
  EXPECT_THAT(err.str(), HasSubstr("fedprllm-admin: error: UNAVAILABLE: cannot reach fedprllm-server at 127.0.0.1:1"));
  // health waits for the channel, so it ends in DEADLINE_EXCEEDED, also naming the address.
  config.server_address = "127.0.0.1:1";
  client = AdminClient::Connect(config, absl::Milliseconds(300));
  ASSERT_TRUE(client.ok());
  std::ostringstream out2, err2;
  EXPECT_EQ(RunAdminCommand({"health", {}}, options, **client, out2, err2), 1);
  EXPECT_THAT(err2.str(), HasSubstr("fedprllm-server at 127.0.0.1:1"));
  EXPECT_EQ(out2.str(), "");
}

TEST(AdminClientTest, MutualTlsCarriesTheOperatorsIdentity) {
  const auto& certs = testing::TestCerts::Get();
  FakeServer server(certs.dir());
  ASSERT_NE(server.server(), nullptr);
  AdminConfig config;
  config.server_address = server.address();
  config.tls = {certs.Path("site-a.crt"), certs.Path("site-a.key"), certs.Path("ca.crt")};
  absl::StatusOr<std::unique_ptr<AdminClient>> client = AdminClient::Connect(config, absl::Seconds(10));
  ASSERT_TRUE(client.ok()) << client.status();
  absl::StatusOr<v1::ListJobsResponse> jobs = (*client)->ListJobs();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  EXPECT_EQ(server.fake().Get().peer_common_names, std::vector<std::string>{"site-a"});
  absl::StatusOr<std::string> health = (*client)->CheckHealth();
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, "SERVING");

  // server_name overrides the name checked: one the server certificate lacks fails.
  config.server_name = "not-the-server";
  client = AdminClient::Connect(config, absl::Seconds(2));
  ASSERT_TRUE(client.ok()) << client.status();
  const absl::Status wrong_name = (*client)->ListJobs().status();
  EXPECT_EQ(wrong_name.code(), absl::StatusCode::kUnavailable) << wrong_name;
  EXPECT_THAT(wrong_name.message(), HasSubstr(server.address()));
  EXPECT_THAT(wrong_name.message(), HasSubstr("TLS check:"));
}

TEST(AdminClientTest, ConnectNamesABadCertificateFile) {
  const auto& certs = testing::TestCerts::Get();
  AdminConfig config;
  config.server_address = "127.0.0.1:1";
  config.tls = {certs.Path("missing.crt"), certs.Path("site-a.key"), certs.Path("ca.crt")};
  const absl::Status missing = AdminClient::Connect(config, absl::Seconds(1)).status();
  EXPECT_FALSE(missing.ok());
  EXPECT_THAT(missing.message(), HasSubstr("tls.cert"));
  // A certificate of another CA is refused before any RPC.
  config.tls = {certs.Path("rogue/mallory.crt"), certs.Path("rogue/mallory.key"), certs.Path("ca.crt")};
  EXPECT_FALSE(AdminClient::Connect(config, absl::Seconds(1)).ok());
}

TEST(AdminConfigTest, ParsesEveryKey) {
  absl::StatusOr<AdminConfig> config = ParseAdminConfig(
      "server_address: fed.example.org:50051\nserver_name: fedprllm\n"
      "tls: {cert: ops.crt, key: ops.key, ca: ca.crt}\ninsecure: false\n",
      "admin.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->server_address, "fed.example.org:50051");
  EXPECT_EQ(config->server_name, "fedprllm");
  EXPECT_EQ(config->tls.cert, "ops.crt");
  EXPECT_EQ(config->tls.key, "ops.key");
  EXPECT_EQ(config->tls.ca, "ca.crt");
  EXPECT_FALSE(config->insecure);
}

TEST(AdminConfigTest, RefusesAnUnknownKey) {
  const absl::Status status =
      ParseAdminConfig("server_address: localhost:50051\ninsecure: true\nserver_adress: typo:1\n", "admin.yaml")
          .status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("server_adress"));
  EXPECT_THAT(status.message(), HasSubstr("admin.yaml:3"));
  const absl::Status nested =
      ParseAdminConfig("server_address: localhost:50051\ntls: {cert: a, key: b, ca: c, pin: d}\n", "admin.yaml")
          .status();
  EXPECT_THAT(nested.message(), HasSubstr("tls.pin"));
}

TEST(AdminConfigTest, RequiresTlsFilesUnlessInsecureAndAnAddress) {
  EXPECT_THAT(ParseAdminConfig("server_address: localhost:50051\n", "a.yaml").status().message(),
              HasSubstr("tls.cert"));
  EXPECT_TRUE(ParseAdminConfig("server_address: localhost:50051\ninsecure: true\n", "a.yaml").ok());
  EXPECT_THAT(ParseAdminConfig("insecure: true\n", "a.yaml").status().message(), HasSubstr("server_address"));
  EXPECT_THAT(ParseAdminConfig("server_address: localhost\ninsecure: true\n", "a.yaml").status().message(),
              HasSubstr("server_address"));
}

TEST(AdminConfigTest, TheExampleFileParses) {
  absl::StatusOr<AdminConfig> config = LoadAdminConfig(std::string(FEDPRLLM_SOURCE_DIR) + "/deploy/admin.example.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->server_address, "localhost:50051");
  EXPECT_FALSE(config->insecure);
}

TEST(AdminUsageTest, ParseAdminCommandRefusesBadCommandLines) {
  const AdminOptions defaults;
  for (const auto& args : std::vector<std::vector<std::string>>{{},
                                                                {"frobnicate"},
                                                                {"submit"},
                                                                {"submit", "a.yaml", "b.yaml"},
                                                                {"jobs", "x"},
                                                                {"abort"},
                                                                {"logs"},
                                                                {"status", "a", "b"},
                                                                {"health", "now"},
                                                                {"status", ""}}) {
    SCOPED_TRACE(args.empty() ? "(none)" : args[0]);
    EXPECT_EQ(ParseAdminCommand(args, defaults).status().code(), absl::StatusCode::kInvalidArgument);
  }
  AdminOptions watch;
  watch.watch = true;
  EXPECT_FALSE(ParseAdminCommand({"jobs"}, watch).ok());
  EXPECT_TRUE(ParseAdminCommand({"status"}, watch).ok());
  watch.interval = absl::ZeroDuration();
  EXPECT_THAT(ParseAdminCommand({"status"}, watch).status().message(), HasSubstr("--interval"));
  AdminOptions follow;
  follow.follow = true;
  EXPECT_FALSE(ParseAdminCommand({"status"}, follow).ok());
  AdminOptions reason;
  reason.reason = "x";
  EXPECT_FALSE(ParseAdminCommand({"jobs"}, reason).ok());
  absl::StatusOr<AdminCommand> ok = ParseAdminCommand({"abort", "nightly"}, reason);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->name, "abort");
  EXPECT_EQ(ok->args, std::vector<std::string>{"nightly"});
  for (const char* command : {"submit", "jobs", "status", "abort", "sites", "logs", "health"}) {
    EXPECT_THAT(kAdminUsage, HasSubstr(std::string("  ") + command)) << "usage text lists " << command;
  }
}

TEST(AdminUsageTest, CheckFlagNamesRefusesUnknownFlagsAndMissingValues) {
  auto check = [](std::vector<std::string> args) {
    args.insert(args.begin(), "fedprllm-admin");
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    return CheckFlagNames(static_cast<int>(argv.size()), argv.data());
  };
  EXPECT_TRUE(check({"--admin_test_switch", "status", "--admin_test_text", "x", "--noadmin_test_switch"}).ok());
  EXPECT_TRUE(check({"-admin_test_text=y", "jobs", "--", "--bogus"}).ok());
  EXPECT_TRUE(check({"--help"}).ok());
  EXPECT_THAT(check({"jobs", "--bogus"}).message(), HasSubstr("unknown flag --bogus"));
  EXPECT_THAT(check({"jobs", "--bogus=1"}).message(), HasSubstr("unknown flag --bogus"));
  EXPECT_THAT(check({"--noadmin_test_text"}).message(), HasSubstr("unknown flag"));
  EXPECT_THAT(check({"jobs", "--admin_test_text"}).message(), HasSubstr("needs a value"));
}

TEST(AdminFormatTest, DurationsBytesAndTimes) {
  EXPECT_EQ(FormatAgo(3), "3 s ago");
  EXPECT_EQ(FormatAgo(-1), "never");
  EXPECT_EQ(FormatSeconds(59.6), "1 min");
  EXPECT_EQ(FormatSeconds(125), "2 min 5 s");
  EXPECT_EQ(FormatSeconds(7800), "2 h 10 min");
  EXPECT_EQ(FormatSeconds(90000), "1 d 1 h");
  EXPECT_EQ(FormatSeconds(std::nan("")), "-");
  EXPECT_EQ(FormatBytes(512), "512 B");
  EXPECT_EQ(FormatBytes(1536), "1.5 KiB");
  EXPECT_EQ(FormatBytes(3.0 * (1 << 30)), "3.0 GiB");
  const FormatContext ctx{kNow, absl::UTCTimeZone()};
  EXPECT_EQ(FormatClockTime(UnixMs(14, 3, 22), ctx), "14:03:22");
  EXPECT_EQ(FormatClockTime(0, ctx), "-");
  EXPECT_EQ(FormatTable({"A", "BB"}, {{"long", "x"}, {"y"}}), "A     BB\nlong  x\ny\n");
}

}  // namespace
}  // namespace fedprllm
