// The operator control plane end to end: a long-running fedprllm-server with a jobs_dir, three
// fedprllm-client daemons that stay up between jobs, and fedprllm-admin over mutual TLS with
// an operator certificate. Two jobs submitted one after the other each give the model a
// single-job run with the same settings gives; a third job, whose site-c dies mid-upload,
// shows site-c lost in `status --json` and is aborted while the server goes on serving; a
// fourth names a model the sites do not have, and they decline it. Also:
// the roles at the admission (a site certificate cannot call the admin API, an operator's
// cannot act as a site), the gRPC health service and the Prometheus endpoint.
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/fedprllm.grpc.pb.h"
#include "proto/health_client.h"
#include "tests/e2e_harness.h"
#include "tests/federation_files.h"
#include "tests/http_get.h"

namespace fedprllm {
namespace {

using ::testing::HasSubstr;
using e2e::ChildProcess;
using e2e::FederationFiles;
using e2e::FreePort;
using e2e::kModel;
using e2e::kSites;
using e2e::ReadAll;
using e2e::Sha256OfSafetensorsTensors;
using e2e::StartClient;
using e2e::StartServer;
using e2e::WaitForText;
using e2e::WriteAll;

struct AdminResult {
  int exit_code = -1;
  std::string out;  // stdout only
  std::string err;
};

class ControlPlaneE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    files_ = FederationFiles::Make().release();
    ASSERT_TRUE(files_->ok()) << files_->error();
    // The reference: the same settings as one job of a server that exits when it is done.
    const int port = FreePort();
    const std::string run = files_->WriteServerConfig("single", {}, port);
    auto server = StartServer(run, port);
    std::vector<std::unique_ptr<ChildProcess>> clients;
    for (const std::string& site : kSites) {
      clients.push_back(StartClient(files_->WriteClientConfig(run, site, port, files_->Certs()), run + "/" + site + ".log"));
    }
    for (auto& c : clients) ASSERT_EQ(c->Wait(120), 0) << c->Log();
    ASSERT_EQ(server->Wait(60), 0) << server->Log();
    reference_digest_ = new std::string(Sha256OfSafetensorsTensors(run + "/out/model/model.safetensors"));
    ASSERT_FALSE(reference_digest_->empty());
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(files_->dir());
    delete files_;
    delete reference_digest_;
  }

  // run/server.yaml of a long-running server with a jobs_dir, an operator, a 3 s site
  // timeout and a metrics endpoint; run/admin.yaml for the operator. Returns `run`.
  static std::string WriteLongRunningServer(const std::string& name, int port, int metrics_port) {
    const std::string run = files_->dir() + "/" + name;
    std::filesystem::create_directories(run);
    const std::string certs = files_->Certs();
    WriteAll(run + "/server.yaml",
             absl::StrCat("listen_address: \"127.0.0.1:", port, "\"\n", "tls: {cert: ", certs, "/server.crt, key: ",
                          certs, "/server.key, ca: ", certs, "/ca.crt}\n", "allowed_clients: [site-a, site-b, site-c]\n",
                          "admins: [operator]\nmonitors: [monitor]\njobs_dir: ", run, "/jobs\n", "poll_window_seconds: 2\n",
                          "site_timeout_seconds: 3\nmetrics_address: \"127.0.0.1:", metrics_port, "\"\n"));
    WriteAll(run + "/admin.yaml", absl::StrCat("server_address: \"127.0.0.1:", port, "\"\n", "tls: {cert: ", certs,
                                               "/operator.crt, key: ", certs, "/operator.key, ca: ", certs, "/ca.crt}\n"));
    return run;
  }

  // run/SITE.yaml of a site daemon (no `model`: it finds each job's model by name in its
  // `models` map); `extra` lines are appended.
  static std::string WriteDaemonConfig(const std::string& run, const std::string& site, int port,
                                       const std::string& extra = "") {
    return files_->WriteClientConfig(
        run, site, port, files_->Certs(), /*model=*/"", "", 60,
        absl::StrCat("exit_after_jobs: 0\nheartbeat_seconds: 0.5\nmodels: {stories260K: ", kModel, "}\n", extra));
  }

  // fedprllm-admin with `args` against the server of `run`.
  static AdminResult Admin(const std::string& run, const std::string& args) {
    static int calls = 0;
    const std::string out = absl::StrCat(run, "/admin-", ++calls, ".out");
    const std::string err = absl::StrCat(run, "/admin-", calls, ".err");
    const std::string command =
        absl::StrCat(FEDPRLLM_ADMIN_BIN, " --config ", run, "/admin.yaml ", args, " >", out, " 2>", err);
    const int status = std::system(command.c_str());
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ReadAll(out), ReadAll(err)};
  }

  // `status NAME --json`, parsed; a null json if the call failed.
  static nlohmann::json Status(const std::string& run, const std::string& name) {
    const AdminResult r = Admin(run, "--json status " + name);
    if (r.exit_code != 0) return nlohmann::json();
    return nlohmann::json::parse(r.out, nullptr, false);
  }

  // Polls `status NAME` until `done(status)` or `timeout_s`; returns the last status.
  template <typename Pred>
  static nlohmann::json WaitForStatus(const std::string& run, const std::string& name, Pred done, double timeout_s) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    nlohmann::json status;
    while (std::chrono::steady_clock::now() < end) {
      status = Status(run, name);
      if (!status.is_discarded() && !status.is_null() && done(status)) return status;
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
    return status;
  }

  static std::string JobState(const nlohmann::json& status) {
    return status.is_object() && status.contains("job") ? status["job"].value("state", "") : "";
  }

  // The state of `site` in a status document's detail, "" if absent.
  static std::string SiteState(const nlohmann::json& status, const std::string& site) {
    if (!status.is_object() || !status.contains("detail_json") || !status["detail_json"].contains("sites")) return "";
    for (const auto& s : status["detail_json"]["sites"]) {
      if (s.value("site", "") == site) return s.value("state", "");
    }
    return "";
  }

  static std::string JobYaml(const std::string& name, const std::string& extra = "") {
    return absl::StrCat("name: ", name, "\nmodel: ", kModel, "\nround_deadline_seconds: 120\n", extra);
  }

  // A channel to the server of `run` with the certificate of `identity`.
  static std::shared_ptr<grpc::Channel> Channel(int port, const std::string& identity) {
    grpc::SslCredentialsOptions options;
    options.pem_root_certs = ReadAll(files_->Certs() + "/ca.crt");
    options.pem_private_key = ReadAll(files_->Certs() + "/" + identity + ".key");
    options.pem_cert_chain = ReadAll(files_->Certs() + "/" + identity + ".crt");
    return grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::SslCredentials(options));
  }

  static FederationFiles* files_;
  static std::string* reference_digest_;
};

FederationFiles* ControlPlaneE2eTest::files_ = nullptr;
std::string* ControlPlaneE2eTest::reference_digest_ = nullptr;

TEST_F(ControlPlaneE2eTest, JobsSubmittedToALongRunningServerMatchASingleJobRun) {
  const int port = FreePort();
  const int metrics_port = FreePort();
  const std::string run = WriteLongRunningServer("long-running", port, metrics_port);
  auto server = StartServer(run, port);
  ASSERT_TRUE(e2e::PortOpen(port)) << server->Log();

  // Three daemons; site-c dies in the middle of its third upload (the third job's).
  std::vector<std::unique_ptr<ChildProcess>> sites;
  for (const std::string& site : kSites) {
    const std::string config = WriteDaemonConfig(run, site, port);
    std::vector<std::string> env;
    if (site == "site-c") env.push_back("FEDPRLLM_CRASH_AT=client-upload-half#3");
    sites.push_back(StartClient(config, run + "/" + site + ".log", env));
  }

  // Two jobs, one after the other, through fedprllm-admin.
  for (const std::string& name : {"job-one", "job-two"}) {
    WriteAll(run + "/" + name + ".yaml", JobYaml(name));
    const AdminResult submitted = Admin(run, "submit " + run + "/" + name + ".yaml");
    ASSERT_EQ(submitted.exit_code, 0) << submitted.err;
    EXPECT_THAT(submitted.out, HasSubstr("submitted job " + name));
    const nlohmann::json status =
        WaitForStatus(run, name, [](const nlohmann::json& s) { return JobState(s) == "JOB_STATE_DONE"; }, 180);
    ASSERT_EQ(JobState(status), "JOB_STATE_DONE") << status.dump() << "\n" << server->Log();
    EXPECT_EQ(Sha256OfSafetensorsTensors(run + "/jobs/" + name + "/output/model/model.safetensors"), *reference_digest_) << name;
    for (auto& site : sites) EXPECT_EQ(site->Wait(0), -1) << "a daemon exited after " << name << ":\n" << site->Log();
  }
  const AdminResult jobs = Admin(run, "jobs");
  ASSERT_EQ(jobs.exit_code, 0) << jobs.err;
  EXPECT_THAT(jobs.out, HasSubstr("job-one"));
  EXPECT_THAT(jobs.out, HasSubstr("job-two"));

  // The third job waits for all three (min_clients 3); site-c dies mid-upload and is lost.
  WriteAll(run + "/job-three.yaml", JobYaml("job-three", "min_clients: 3\n"));
  ASSERT_EQ(Admin(run, "submit " + run + "/job-three.yaml").exit_code, 0);
  ASSERT_EQ(sites[2]->Wait(120), 128 + SIGKILL) << sites[2]->Log();
  const nlohmann::json lost = WaitForStatus(
      run, "job-three",
      [](const nlohmann::json& s) {
        return SiteState(s, "site-c") == "lost" && SiteState(s, "site-a") == "committed" &&
               SiteState(s, "site-b") == "committed";
      },
      60);
  EXPECT_EQ(JobState(lost), "JOB_STATE_RUNNING") << lost.dump();
  EXPECT_EQ(SiteState(lost, "site-c"), "lost") << lost.dump();
  EXPECT_EQ(SiteState(lost, "site-a"), "committed") << lost.dump();
  EXPECT_EQ(SiteState(lost, "site-b"), "committed") << lost.dump();
  ASSERT_TRUE(lost.contains("detail_json")) << lost.dump();
  EXPECT_EQ(lost["detail_json"].value("round_state", ""), "OPEN") << lost.dump();
  EXPECT_EQ(lost["detail_json"].value("committed", -1), 2) << lost.dump();
  const AdminResult human = Admin(run, "status job-three");
  EXPECT_THAT(human.out, HasSubstr("site-c"));
  EXPECT_THAT(human.out, HasSubstr("lost"));
  const AdminResult site_list = Admin(run, "--json sites");
  ASSERT_EQ(site_list.exit_code, 0) << site_list.err;
  const nlohmann::json listed = nlohmann::json::parse(site_list.out, nullptr, false);
  ASSERT_TRUE(listed.contains("sites")) << site_list.out;
  const int64_t in_300_days_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count() +
      int64_t{300} * 86400 * 1000;
  for (const auto& s : listed["sites"]) {
    EXPECT_EQ(s.value("connected", false), s.value("identity", "") != "site-c") << s.dump();
    // make_certs.sh issues for 365 days; the proto's JSON mapping writes int64 as a string.
    EXPECT_GT(std::stoll(s.value("certificate_expires_unix_ms", std::string("0"))), in_300_days_ms) << s.dump();
  }

  // abort stops it; the server goes on serving, and the two live daemons stay up.
  const AdminResult aborted = Admin(run, "abort job-three --reason \"site-c is down\"");
  ASSERT_EQ(aborted.exit_code, 0) << aborted.err;
  const nlohmann::json after_abort =
      WaitForStatus(run, "job-three", [](const nlohmann::json& s) { return JobState(s) == "JOB_STATE_ABORTED"; }, 60);
  EXPECT_EQ(JobState(after_abort), "JOB_STATE_ABORTED") << after_abort.dump();
  EXPECT_THAT(after_abort["job"].value("reason", ""), HasSubstr("site-c is down"));
  EXPECT_EQ(Admin(run, "health").exit_code, 0);
  EXPECT_EQ(Admin(run, "jobs").exit_code, 0);
  EXPECT_EQ(sites[0]->Wait(0), -1) << sites[0]->Log();
  EXPECT_EQ(sites[1]->Wait(0), -1) << sites[1]->Log();
  // A job naming a model the sites do not have: each live site declines it, saying why, and
  // with too few sites left it fails at once.
  WriteAll(run + "/job-four.yaml", JobYaml("job-four", "model_name: llama-2-7b\n"));
  ASSERT_EQ(Admin(run, "submit " + run + "/job-four.yaml").exit_code, 0);
  const nlohmann::json declined =
      WaitForStatus(run, "job-four", [](const nlohmann::json& s) { return JobState(s) == "JOB_STATE_FAILED"; }, 60);
  ASSERT_EQ(JobState(declined), "JOB_STATE_FAILED") << declined.dump();
  const std::string reason = declined["job"].value("reason", "");
  EXPECT_THAT(reason, HasSubstr("declined"));
  EXPECT_THAT(reason, HasSubstr("site-a: this site has no model named llama-2-7b (its models: stories260K)"));
  EXPECT_EQ(sites[0]->Wait(0), -1) << sites[0]->Log();

  const AdminResult log = Admin(run, "logs job-one");
  ASSERT_EQ(log.exit_code, 0) << log.err;
  EXPECT_THAT(log.out, HasSubstr("round 0 decided"));
  EXPECT_THAT(log.out, ::testing::Not(HasSubstr("job-two")));

  // Roles: a site certificate cannot call the admin API, an operator's cannot act as a site,
  // a monitor's may read and check health but not submit or abort.
  {
    auto monitor_stub = v1::FedPrLLMAdmin::NewStub(Channel(port, "monitor"));
    grpc::ClientContext list_context;
    v1::ListJobsResponse jobs;
    const grpc::Status listed = monitor_stub->ListJobs(&list_context, v1::ListJobsRequest(), &jobs);
    EXPECT_TRUE(listed.ok()) << listed.error_message();
    EXPECT_GE(jobs.jobs_size(), 2);
    grpc::ClientContext abort_context;
    v1::AbortJobRequest abort;
    abort.set_name("job-one");
    v1::AbortJobResponse aborted;
    const grpc::Status refused = monitor_stub->AbortJob(&abort_context, abort, &aborted);
    EXPECT_EQ(refused.error_code(), grpc::StatusCode::PERMISSION_DENIED) << refused.error_message();
    EXPECT_THAT(refused.error_message(), HasSubstr("a monitor certificate may only check health"));
    absl::StatusOr<std::string> health = CheckHealth(Channel(port, "monitor"), "", 5);
    ASSERT_TRUE(health.ok()) << health.status();
    EXPECT_EQ(*health, "SERVING");
  }
  {
    auto admin_stub = v1::FedPrLLMAdmin::NewStub(Channel(port, "site-a"));
    grpc::ClientContext context;
    v1::ListJobsResponse response;
    const grpc::Status s = admin_stub->ListJobs(&context, v1::ListJobsRequest(), &response);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr("admins"));
    auto site_stub = v1::FedPrLLM::NewStub(Channel(port, "operator"));
    grpc::ClientContext site_context;
    v1::WhoAmIResponse who;
    const grpc::Status t = site_stub->WhoAmI(&site_context, v1::WhoAmIRequest(), &who);
    EXPECT_EQ(t.error_code(), grpc::StatusCode::PERMISSION_DENIED) << t.error_message();
    EXPECT_THAT(t.error_message(), HasSubstr("allowed_clients"));
    grpc::ClientContext own_context;
    const grpc::Status u = v1::FedPrLLM::NewStub(Channel(port, "site-a"))->WhoAmI(&own_context, v1::WhoAmIRequest(), &who);
    EXPECT_TRUE(u.ok()) << u.error_message();
    EXPECT_EQ(who.identity(), "site-a");
  }

  // Health, with this test's own client, for the server and for the site service.
  for (const std::string& service : {"", "fedprllm.v1.FedPrLLM"}) {
    absl::StatusOr<std::string> health = CheckHealth(Channel(port, "site-b"), service, 5);
    ASSERT_TRUE(health.ok()) << health.status();
    EXPECT_EQ(*health, "SERVING") << service;
  }

  // Metrics: two jobs done, one aborted; site-a committed three uploads, site-c two.
  absl::StatusOr<std::string> metrics = e2e::HttpGet("127.0.0.1", metrics_port, "/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_THAT(*metrics, HasSubstr("fedprllm_jobs{state=\"done\"} 2"));
  EXPECT_THAT(*metrics, HasSubstr("fedprllm_jobs{state=\"aborted\"} 1"));
  EXPECT_THAT(*metrics, HasSubstr("fedprllm_jobs{state=\"failed\"} 1"));
  EXPECT_THAT(*metrics, HasSubstr("fedprllm_rounds_closed_total 2"));
  EXPECT_THAT(*metrics, HasSubstr("fedprllm_uploads_committed_total{site=\"site-a\"} 3"));
  EXPECT_THAT(*metrics, HasSubstr("fedprllm_uploads_committed_total{site=\"site-c\"} 2"));

  // SIGTERM stops the daemons and the server cleanly.
  for (int i = 0; i < 2; ++i) {
    sites[i]->Signal(SIGTERM);
    EXPECT_EQ(sites[i]->Wait(30), 0) << sites[i]->Log();
  }
  server->Signal(SIGTERM);
  EXPECT_EQ(server->Wait(60), 0) << server->Log();
}

TEST_F(ControlPlaneE2eTest, SubmittedJobResumesAfterTheServerIsKilledAndTheDaemonsStayUp) {
  const int port = FreePort();
  const std::string run = WriteLongRunningServer("resume", port, FreePort());
  std::ofstream(run + "/server.yaml", std::ios::app) << "log_format: json\n";
  // Killed at the second commit of the job.
  auto server = StartServer(run, port, {"FEDPRLLM_CRASH_AT=committed#2"});
  ASSERT_TRUE(e2e::PortOpen(port)) << server->Log();

  // The preflight of a site against the running server, good and with a wrong server name.
  const std::string good = WriteDaemonConfig(run, "site-a", port);
  const AdminResult check = [&] {
    const std::string out = run + "/check.out";
    const int status = std::system(absl::StrCat(FEDPRLLM_CLIENT_BIN, " check --config ", good, " >", out, " 2>&1").c_str());
    return AdminResult{WEXITSTATUS(status), ReadAll(out), ""};
  }();
  EXPECT_EQ(check.exit_code, 0) << check.out;
  EXPECT_THAT(check.out, HasSubstr("accepts this site as site-a (role site"));
  const std::string wrong = files_->WriteClientConfig(run, "site-b", port, files_->Certs(), kModel, "", 60,
                                                      "server_name: fedprllm.example.org\n");
  const std::string out = run + "/check-wrong.out";
  const int status = std::system(absl::StrCat(FEDPRLLM_CLIENT_BIN, " check --config ", wrong, " >", out, " 2>&1").c_str());
  EXPECT_EQ(WEXITSTATUS(status), 1) << ReadAll(out);
  EXPECT_THAT(ReadAll(out), HasSubstr("server name mismatch"));

  std::vector<std::unique_ptr<ChildProcess>> sites;
  for (const std::string& site : kSites) {
    sites.push_back(StartClient(WriteDaemonConfig(run, site, port), run + "/" + site + ".log"));
  }
  WriteAll(run + "/resumed.yaml", JobYaml("resumed"));
  ASSERT_EQ(Admin(run, "submit " + run + "/resumed.yaml").exit_code, 0);
  ASSERT_EQ(server->Wait(120), 128 + SIGKILL) << server->Log();
  const nlohmann::json on_disk = nlohmann::json::parse(ReadAll(run + "/jobs/resumed/status.json"), nullptr, false);
  EXPECT_EQ(on_disk.value("state", ""), "running") << on_disk.dump();

  // Started again with the same config, it resumes the job; the daemons reconnect.
  server = StartServer(run, port);
  const nlohmann::json done =
      WaitForStatus(run, "resumed", [](const nlohmann::json& s) { return JobState(s) == "JOB_STATE_DONE"; }, 180);
  ASSERT_EQ(JobState(done), "JOB_STATE_DONE") << done.dump() << "\n" << server->Log();
  // log_format json: every line of the server's log is one JSON object (but the kill
  // point's own line).
  int lines = 0;
  bool resumed_line = false;
  std::istringstream log(server->Log());
  for (std::string line; std::getline(log, line);) {
    if (line.rfind("crash point ", 0) == 0) continue;
    const nlohmann::json entry = nlohmann::json::parse(line, nullptr, false);
    ASSERT_TRUE(entry.is_object()) << line;
    EXPECT_EQ(entry.value("program", ""), "server") << line;
    resumed_line = resumed_line || entry.value("msg", "") ==
                                       "job resumed was not finished when the server stopped; queued to resume";
    ++lines;
  }
  EXPECT_GT(lines, 10);
  EXPECT_TRUE(resumed_line) << server->Log();
  EXPECT_THAT(server->Log(), HasSubstr("resuming from"));
  EXPECT_EQ(Sha256OfSafetensorsTensors(run + "/jobs/resumed/output/model/model.safetensors"), *reference_digest_);
  for (auto& site : sites) EXPECT_EQ(site->Wait(0), -1) << site->Log();
  for (auto& site : sites) {
    site->Signal(SIGTERM);
    EXPECT_EQ(site->Wait(30), 0) << site->Log();
  }
  server->Signal(SIGTERM);
  EXPECT_EQ(server->Wait(60), 0) << server->Log();
}

}  // namespace
}  // namespace fedprllm
