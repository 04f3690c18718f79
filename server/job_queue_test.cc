// The jobs room without running a job: job YAML validation, the new server config keys,
// submission, the queue's persistence across a restart, abort of a queued job, and what a
// site's Join or WaitForJob gets when no job runs.
#include "server/job_queue.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "server/job_config.h"
#include "server/server_config.h"

namespace fedprllm {
namespace {

using ::testing::HasSubstr;

class JobQueueTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(std::filesystem::temp_directory_path().string(), "/fedprllm-job-queue-",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    absl::StatusOr<ServerConfig> config = ParseServerConfig(
        absl::StrCat("insecure: true\nallowed_clients: [site-a, site-b, site-c]\nadmins: [operator]\n"
                     "jobs_dir: ", dir_, "/jobs\n"),
        "server.yaml");
    ASSERT_TRUE(config.ok()) << config.status();
    server_ = *config;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string dir_;
  ServerConfig server_;
};

TEST_F(JobQueueTest, JobYamlOverlaysTheServersKeysAndNamesBadKeys) {
  absl::StatusOr<JobDefinition> job =
      ParseJobYaml("name: nightly\nmodel: /models/llama-2-7b\nsites: [site-a, site-c]\nsparsity: 0.6\n", "n.yaml", server_);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->name, "nightly");
  EXPECT_EQ(job->config.model_name, "llama-2-7b");
  EXPECT_EQ(job->config.allowed_clients, (std::vector<std::string>{"site-a", "site-c"}));
  EXPECT_EQ(job->config.expected_clients, 2);
  EXPECT_EQ(job->config.min_clients, 2);
  EXPECT_DOUBLE_EQ(job->config.sparsity, 0.6);
  EXPECT_EQ(job->config.state_dir, dir_ + "/jobs/nightly/state");
  EXPECT_EQ(job->config.output_dir, dir_ + "/jobs/nightly/output");
  EXPECT_TRUE(job->config.insecure);  // the server's own keys carry over

  const std::vector<std::pair<std::string, std::string>> bad = {
      {"model: m\n", "'name': is required"},
      {"name: x\n", "'model': is required"},
      {"name: x\nmodel: m\nsites: [site-z]\n", "'sites': \"site-z\" is not in the server's allowed_clients"},
      {"name: x\nmodel: m\nlisten_address: \"0:1\"\n", "unknown config key 'listen_address'"},
      {"name: x\nmodel: m\nsparsity: 1.5\n", "'sparsity'"},
      {"name: ../x\nmodel: m\n", "'name'"},
      {"name: x\nmodel: m\nsites: [site-a]\nmin_clients: 2\n", "'min_clients'"},
  };
  for (const auto& [yaml, expected] : bad) {
    absl::StatusOr<JobDefinition> refused = ParseJobYaml(yaml, "bad.yaml", server_);
    ASSERT_FALSE(refused.ok()) << yaml;
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << yaml;
    EXPECT_THAT(refused.status().message(), HasSubstr(expected)) << yaml;
    EXPECT_THAT(refused.status().message(), HasSubstr("bad.yaml")) << yaml;
  }
  ServerConfig no_jobs_dir = server_;
  no_jobs_dir.jobs_dir.clear();
  EXPECT_EQ(ParseJobYaml("name: x\nmodel: m\n", "x.yaml", no_jobs_dir).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(JobQueueTest, ServerConfigRefusesAnIdentityInBothRolesAndNeedsAJobOrAJobsDir) {
  auto parse = [](const std::string& yaml) { return ParseServerConfig(yaml, "s.yaml").status(); };
  EXPECT_THAT(parse("insecure: true\nallowed_clients: [a, b]\nadmins: [b]\njobs_dir: j\n").message(),
              HasSubstr("'admins': \"b\" is also in allowed_clients"));
  EXPECT_THAT(parse("insecure: true\nallowed_clients: [a]\nadmins: [o]\nmonitors: [m, o]\njobs_dir: j\n").message(),
              HasSubstr("'monitors': \"o\" is also in admins"));
  EXPECT_THAT(parse("insecure: true\nallowed_clients: [a]\nmonitors: [m, m]\njobs_dir: j\n").message(),
              HasSubstr("'monitors': \"m\" is listed twice"));
  EXPECT_THAT(parse("insecure: true\nallowed_clients: [a]\n").message(), HasSubstr("'jobs_dir': is required"));
  EXPECT_THAT(parse("insecure: true\nallowed_clients: [a]\njobs: [x.yaml]\nmodel: m\noutput_dir: o\nstate_dir: s\n")
                  .message(),
              HasSubstr("'jobs': needs jobs_dir"));
  EXPECT_THAT(parse("insecure: true\nallowed_clients: [a]\njobs_dir: j\nlog_format: xml\n").message(),
              HasSubstr("'log_format'"));
  EXPECT_THAT(parse("insecure: true\nallowed_clients: [a]\nmodel: m\n").message(), HasSubstr("'output_dir'"));
}

TEST_F(JobQueueTest, SubmittedJobsQueueInOrderAndSurviveARestart) {
  {
    JobQueue queue(server_, nullptr, nullptr);
    ASSERT_TRUE(queue.Load().ok());
    auto first = queue.Submit("name: first\nmodel: m.bin\n", "first.yaml");
    ASSERT_TRUE(first.ok()) << first.status();
    EXPECT_EQ(first->second, 0);
    EXPECT_EQ(first->first.state(), v1::JOB_STATE_QUEUED);
    auto second = queue.Submit("name: second\nmodel: m.bin\nsites: [site-b]\n", "second.yaml");
    ASSERT_TRUE(second.ok()) << second.status();
    EXPECT_EQ(second->second, 1);
    EXPECT_EQ(queue.Submit("name: first\nmodel: other.bin\n", "again.yaml").status().code(),
              absl::StatusCode::kAlreadyExists);
    auto aborted = queue.Abort("first", "not needed", "operator");
    ASSERT_TRUE(aborted.ok()) << aborted.status();
    EXPECT_EQ(aborted->state(), v1::JOB_STATE_ABORTED);
    EXPECT_THAT(aborted->reason(), HasSubstr("aborted by operator: not needed"));
    EXPECT_EQ(queue.Abort("first", "", "operator").status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(queue.Abort("nobody", "", "operator").status().code(), absl::StatusCode::kNotFound);
  }
  // The job's files, as a restart finds them.
  std::ifstream yaml(dir_ + "/jobs/second/job.yaml");
  std::string text((std::istreambuf_iterator<char>(yaml)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "name: second\nmodel: m.bin\nsites: [site-b]\n");

  // A restart: the aborted job stays aborted, the queued one is queued again, and a `jobs:`
  // file of a known name is not queued twice.
  std::ofstream(dir_ + "/second.yaml") << "name: second\nmodel: changed.bin\n";
  std::ofstream(dir_ + "/third.yaml") << "name: third\nmodel: m.bin\n";
  ServerConfig restarted = server_;
  restarted.jobs = {dir_ + "/second.yaml", dir_ + "/third.yaml"};
  JobQueue queue(restarted, nullptr, nullptr);
  ASSERT_TRUE(queue.Load().ok());
  const std::vector<v1::JobSummary> jobs = queue.List();
  ASSERT_EQ(jobs.size(), 3u);
  EXPECT_EQ(jobs[0].name(), "first");
  EXPECT_EQ(jobs[0].state(), v1::JOB_STATE_ABORTED);
  EXPECT_EQ(jobs[1].name(), "second");
  EXPECT_EQ(jobs[1].state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(jobs[1].sites_size(), 1);  // the submitted YAML, not the changed file
  EXPECT_EQ(jobs[2].name(), "third");
  EXPECT_EQ(jobs[2].state(), v1::JOB_STATE_QUEUED);

  // Status without a name: no job runs, so the last to end.
  auto status = queue.Status("");
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(status->first.name(), "first");
  EXPECT_TRUE(status->second.empty());
}

TEST_F(JobQueueTest, SitesWaitWhileNoJobRuns) {
  JobQueue queue(server_, nullptr, nullptr);
  ASSERT_TRUE(queue.Load().ok());
  EXPECT_EQ(queue.Running(), nullptr);
  EXPECT_EQ(queue.JobToJoin("").status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(queue.JobToJoin("job-unknown").status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(queue.Submit("name: later\nmodel: m.bin\n", "later.yaml").ok());
  // Queued, not started: the site retries.
  EXPECT_EQ(queue.JobToJoin("job-unknown").status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(queue.Decline("site-a", "job-x", "no model").code(), absl::StatusCode::kNotFound);

  // A held WaitForJob poll answers NONE after the poll window, and counts as connected.
  ServerConfig fast = server_;
  fast.poll_window_seconds = 1;
  JobQueue polled(fast, nullptr, nullptr);
  absl::Notification answered;
  absl::StatusOr<v1::JobOffer> offer;
  v1::JobWaitRequest request;
  const uint64_t id = polled.WaitForJob("site-a", request, [&](absl::StatusOr<v1::JobOffer> o) {
    offer = std::move(o);
    answered.Notify();
  });
  EXPECT_NE(id, 0u);
  std::vector<v1::SiteSummary> sites = polled.Sites();
  ASSERT_EQ(sites.size(), 3u);
  EXPECT_TRUE(sites[0].connected());
  EXPECT_EQ(sites[0].activity(), "waiting for a job");
  EXPECT_FALSE(sites[1].connected());
  EXPECT_EQ(sites[1].activity(), "never connected");
  ASSERT_TRUE(answered.WaitForNotificationWithTimeout(absl::Seconds(10)));
  ASSERT_TRUE(offer.ok()) << offer.status();
  EXPECT_EQ(offer->state(), v1::OFFER_STATE_NONE);
}

}  // namespace
}  // namespace fedprllm
