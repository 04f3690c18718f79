// ServerMetrics: each update shows as the exact Prometheus sample line it should, both in
// Scrape() and over the HTTP endpoint; a bad or busy metrics_address is a clear error.
#include "server/server_metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/build_info.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/http_get.h"

namespace fedprllm {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

std::vector<std::string> Lines(const std::string& text) { return absl::StrSplit(text, '\n', absl::SkipEmpty()); }

std::unique_ptr<ServerMetrics> StartWithoutEndpoint() {
  absl::StatusOr<std::unique_ptr<ServerMetrics>> metrics = ServerMetrics::Start("");
  EXPECT_TRUE(metrics.ok()) << metrics.status();
  return metrics.ok() ? std::move(metrics).value() : nullptr;
}

TEST(ServerMetricsTest, FreshRegistryReportsEveryMetricWithHelpAndZeros) {
  auto metrics = StartWithoutEndpoint();
  ASSERT_NE(metrics, nullptr);
  EXPECT_EQ(metrics->port(), 0);
  const std::vector<std::string> lines = Lines(metrics->Scrape());
  // prometheus-cpp leaves out a family without series (the per-site and per-job ones).
  const std::vector<std::pair<std::string, std::string>> families = {
      {"fedprllm_jobs", "gauge"},
      {"fedprllm_rounds_closed_total", "counter"},
      {"fedprllm_upload_duration_seconds", "histogram"},
      {"fedprllm_aggregation_duration_seconds", "histogram"},
      {"fedprllm_live_sites", "gauge"},
      {"fedprllm_connected_sites", "gauge"},
      {"fedprllm_votes_counted_total", "counter"},
      {"fedprllm_vote_counting_weights_per_second", "gauge"},
      {"fedprllm_build_info", "gauge"},
  };
  for (const auto& [name, type] : families) {
    EXPECT_THAT(lines, Contains(absl::StrCat("# TYPE ", name, " ", type))) << name;
    EXPECT_THAT(lines, Contains(HasSubstr(absl::StrCat("# HELP ", name, " ")))) << name;
  }
  for (const char* state : ServerMetrics::kJobStates) {
    EXPECT_THAT(lines, Contains(absl::StrCat("fedprllm_jobs{state=\"", state, "\"} 0")));
  }
  EXPECT_THAT(lines, Contains("fedprllm_rounds_closed_total 0"));
  EXPECT_THAT(lines, Contains("fedprllm_votes_counted_total 0"));
  EXPECT_THAT(lines, Contains("fedprllm_live_sites 0"));
  EXPECT_THAT(lines, Contains("fedprllm_upload_duration_seconds_count 0"));
  EXPECT_THAT(lines, Contains(absl::StrCat("fedprllm_build_info{commit=\"", kBuildCommit, "\",version=\"",
                                           kBuildVersion, "\"} 1")));
  // No site has uploaded and no job has a round yet: no labelled series.
  EXPECT_THAT(lines, Not(Contains(HasSubstr("fedprllm_uploads_committed_total"))));
  EXPECT_THAT(lines, Not(Contains(HasSubstr("fedprllm_current_round"))));

  // The labelled families appear, with HELP and TYPE, with their first series.
  metrics->UploadCommitted("s", 1, 1, 1, 1);
  metrics->SetCurrentRound("j", 1);
  const std::vector<std::string> later = Lines(metrics->Scrape());
  for (const auto& [name, type] : std::vector<std::pair<std::string, std::string>>{
           {"fedprllm_uploads_committed_total", "counter"},
           {"fedprllm_upload_bytes_received_total", "counter"},
           {"fedprllm_current_round", "gauge"}}) {
    EXPECT_THAT(later, Contains(absl::StrCat("# TYPE ", name, " ", type))) << name;
    EXPECT_THAT(later, Contains(HasSubstr(absl::StrCat("# HELP ", name, " ")))) << name;
  }
}

TEST(ServerMetricsTest, UpdatesShowAsExactSamples) {
  auto metrics = StartWithoutEndpoint();
  ASSERT_NE(metrics, nullptr);
  // Durations are exact in binary, so sums print exactly.
  metrics->RoundClosed(0.125);
  metrics->RoundClosed(3.0);
  metrics->UploadCommitted("site-a", 1000, 0.375, 4096, 0.5);
  metrics->UploadCommitted("site-b", 250, 7.0, 1000, 0.25);
  metrics->UploadCommitted("site-a", 2000, 0.75, 4096, 2.0);
  metrics->SetLiveSites(2);
  metrics->SetConnectedSites(3);
  metrics->SetCurrentRound("job-1", 4);

  const std::vector<std::string> lines = Lines(metrics->Scrape());
  EXPECT_THAT(lines, Contains("fedprllm_rounds_closed_total 2"));
  EXPECT_THAT(lines, Contains("fedprllm_uploads_committed_total{site=\"site-a\"} 2"));
  EXPECT_THAT(lines, Contains("fedprllm_uploads_committed_total{site=\"site-b\"} 1"));
  EXPECT_THAT(lines, Contains("fedprllm_upload_bytes_received_total{site=\"site-a\"} 3000"));
  EXPECT_THAT(lines, Contains("fedprllm_upload_bytes_received_total{site=\"site-b\"} 250"));
  EXPECT_THAT(lines, Contains("fedprllm_votes_counted_total 9192"));
  // The last commit's rate: 4096 weights in 2 s.
  EXPECT_THAT(lines, Contains("fedprllm_vote_counting_weights_per_second 2048"));
  EXPECT_THAT(lines, Contains("fedprllm_live_sites 2"));
  EXPECT_THAT(lines, Contains("fedprllm_connected_sites 3"));
  EXPECT_THAT(lines, Contains("fedprllm_current_round{job=\"job-1\"} 4"));

  // Histograms are cumulative: uploads of 0.375, 0.75 and 7 s.
  EXPECT_THAT(lines, Contains("fedprllm_upload_duration_seconds_count 3"));
  EXPECT_THAT(lines, Contains("fedprllm_upload_duration_seconds_sum 8.125"));
  EXPECT_THAT(lines, Contains("fedprllm_upload_duration_seconds_bucket{le=\"0.25\"} 0"));
  EXPECT_THAT(lines, Contains("fedprllm_upload_duration_seconds_bucket{le=\"0.5\"} 1"));
  EXPECT_THAT(lines, Contains("fedprllm_upload_duration_seconds_bucket{le=\"1\"} 2"));
  EXPECT_THAT(lines, Contains("fedprllm_upload_duration_seconds_bucket{le=\"5\"} 2"));
  EXPECT_THAT(lines, Contains("fedprllm_upload_duration_seconds_bucket{le=\"10\"} 3"));
  EXPECT_THAT(lines, Contains("fedprllm_upload_duration_seconds_bucket{le=\"+Inf\"} 3"));
  // Round closes of 0.125 and 3 s.
  EXPECT_THAT(lines, Contains("fedprllm_aggregation_duration_seconds_count 2"));
  EXPECT_THAT(lines, Contains("fedprllm_aggregation_duration_seconds_sum 3.125"));
  EXPECT_THAT(lines, Contains("fedprllm_aggregation_duration_seconds_bucket{le=\"0.1\"} 0"));
  EXPECT_THAT(lines, Contains("fedprllm_aggregation_duration_seconds_bucket{le=\"0.25\"} 1"));
  EXPECT_THAT(lines, Contains("fedprllm_aggregation_duration_seconds_bucket{le=\"2.5\"} 1"));
  EXPECT_THAT(lines, Contains("fedprllm_aggregation_duration_seconds_bucket{le=\"5\"} 2"));
}

TEST(ServerMetricsTest, BadNumbersAreLeftOutAndZeroTimeKeepsTheRate) {
  auto metrics = StartWithoutEndpoint();
  ASSERT_NE(metrics, nullptr);
  metrics->UploadCommitted("s", 100, 1.0, 1000, 0.5);  // rate 2000
  metrics->UploadCommitted("s", -5, -1.0, 10, 0.0);    // bytes and time left out; rate kept
  metrics->UploadCommitted("s", 7, std::nan(""), -3, 1.0);
  metrics->RoundClosed(-2.0);
  const std::vector<std::string> lines = Lines(metrics->Scrape());
  EXPECT_THAT(lines, Contains("fedprllm_uploads_committed_total{site=\"s\"} 3"));
  EXPECT_THAT(lines, Contains("fedprllm_upload_bytes_received_total{site=\"s\"} 107"));
  EXPECT_THAT(lines, Contains("fedprllm_upload_duration_seconds_count 1"));
  EXPECT_THAT(lines, Contains("fedprllm_votes_counted_total 1010"));
  EXPECT_THAT(lines, Contains("fedprllm_vote_counting_weights_per_second 2000"));
  EXPECT_THAT(lines, Contains("fedprllm_rounds_closed_total 1"));
  EXPECT_THAT(lines, Contains("fedprllm_aggregation_duration_seconds_count 0"));
}

TEST(ServerMetricsTest, JobCountsZeroStatesLeftOut) {
  auto metrics = StartWithoutEndpoint();
  ASSERT_NE(metrics, nullptr);
  metrics->SetJobCounts({{"queued", 2}, {"running", 1}, {"paused", 5}});
  std::vector<std::string> lines = Lines(metrics->Scrape());
  EXPECT_THAT(lines, Contains("fedprllm_jobs{state=\"queued\"} 2"));
  EXPECT_THAT(lines, Contains("fedprllm_jobs{state=\"running\"} 1"));
  EXPECT_THAT(lines, Contains("fedprllm_jobs{state=\"paused\"} 5"));
  EXPECT_THAT(lines, Contains("fedprllm_jobs{state=\"done\"} 0"));

  metrics->SetJobCounts({{"done", 3}});
  lines = Lines(metrics->Scrape());
  EXPECT_THAT(lines, Contains("fedprllm_jobs{state=\"queued\"} 0"));
  EXPECT_THAT(lines, Contains("fedprllm_jobs{state=\"running\"} 0"));
  EXPECT_THAT(lines, Contains("fedprllm_jobs{state=\"paused\"} 0"));
  EXPECT_THAT(lines, Contains("fedprllm_jobs{state=\"done\"} 3"));
}

TEST(ServerMetricsTest, CurrentRoundPerJobUntilRemoved) {
  auto metrics = StartWithoutEndpoint();
  ASSERT_NE(metrics, nullptr);
  metrics->SetCurrentRound("a", 1);
  metrics->SetCurrentRound("b", 7);
  metrics->SetCurrentRound("a", 2);
  std::vector<std::string> lines = Lines(metrics->Scrape());
  EXPECT_THAT(lines, Contains("fedprllm_current_round{job=\"a\"} 2"));
  EXPECT_THAT(lines, Contains("fedprllm_current_round{job=\"b\"} 7"));

  metrics->RemoveJob("a");
  metrics->RemoveJob("never-seen");
  lines = Lines(metrics->Scrape());
  EXPECT_THAT(lines, Not(Contains(HasSubstr("fedprllm_current_round{job=\"a\"}"))));
  EXPECT_THAT(lines, Contains("fedprllm_current_round{job=\"b\"} 7"));
  metrics->SetCurrentRound("a", 1);  // a job of the same name again
  EXPECT_THAT(Lines(metrics->Scrape()), Contains("fedprllm_current_round{job=\"a\"} 1"));
}

TEST(ServerMetricsTest, LabelValuesAreEscaped) {
  auto metrics = StartWithoutEndpoint();
  ASSERT_NE(metrics, nullptr);
  metrics->SetCurrentRound("odd \"job\"\\name", 3);
  EXPECT_THAT(Lines(metrics->Scrape()), Contains("fedprllm_current_round{job=\"odd \\\"job\\\"\\\\name\"} 3"));
}

TEST(ServerMetricsTest, ConcurrentUpdatesAreAllCounted) {
  auto metrics = StartWithoutEndpoint();
  ASSERT_NE(metrics, nullptr);
  constexpr int kThreads = 4;
  constexpr int kUploadsEach = 2000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&metrics, t] {
      for (int i = 0; i < kUploadsEach; ++i) {
        metrics->UploadCommitted("site-" + std::to_string(i % 3), 10, 0.01, 5, 0.001);
        metrics->SetCurrentRound("job-" + std::to_string(t), i);
        if (i % 100 == 0) metrics->Scrape();
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  const std::vector<std::string> lines = Lines(metrics->Scrape());
  EXPECT_THAT(lines, Contains(absl::StrCat("fedprllm_votes_counted_total ", kThreads * kUploadsEach * 5)));
  EXPECT_THAT(lines, Contains(absl::StrCat("fedprllm_upload_duration_seconds_count ", kThreads * kUploadsEach)));
  // i % 3 == 0 for 667 of 0..1999.
  EXPECT_THAT(lines, Contains(absl::StrCat("fedprllm_uploads_committed_total{site=\"site-0\"} ", kThreads * 667)));
  EXPECT_THAT(lines, Contains(absl::StrCat("fedprllm_upload_bytes_received_total{site=\"site-0\"} ",
                                           kThreads * 667 * 10)));
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_THAT(lines, Contains(absl::StrCat("fedprllm_current_round{job=\"job-", t, "\"} ", kUploadsEach - 1)));
  }
}

TEST(ServerMetricsTest, ServesMetricsOverHttp) {
  absl::StatusOr<std::unique_ptr<ServerMetrics>> metrics = ServerMetrics::Start("127.0.0.1:0");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  const int port = (*metrics)->port();
  ASSERT_GT(port, 0);
  (*metrics)->RoundClosed(1.5);
  (*metrics)->UploadCommitted("site-a", 123, 0.5, 10, 1.0);

  absl::StatusOr<e2e::HttpResponse> response = e2e::HttpGetResponse("127.0.0.1", port, "/metrics");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status_code, 200);
  EXPECT_THAT(response->headers["content-type"], HasSubstr("text/plain"));
  const std::vector<std::string> lines = Lines(response->body);
  EXPECT_THAT(lines, Contains("fedprllm_rounds_closed_total 1"));
  EXPECT_THAT(lines, Contains("fedprllm_upload_bytes_received_total{site=\"site-a\"} 123"));
  // What the endpoint serves is what Scrape() says (apart from the Exposer's own metrics).
  for (const std::string& line : Lines((*metrics)->Scrape())) EXPECT_THAT(lines, Contains(line));

  // A later update is visible to the next scrape.
  (*metrics)->RoundClosed(0.5);
  absl::StatusOr<std::string> body = e2e::HttpGet("127.0.0.1", port, "/metrics");
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_THAT(Lines(*body), Contains("fedprllm_rounds_closed_total 2"));

  absl::StatusOr<std::string> other = e2e::HttpGet("127.0.0.1", port, "/not-metrics");
  EXPECT_EQ(other.status().code(), absl::StatusCode::kFailedPrecondition) << other.status();
  EXPECT_THAT(other.status().message(), HasSubstr("status 404"));

  // After the endpoint stops, nothing listens on the port.
  metrics->reset();
  absl::StatusOr<std::string> gone = e2e::HttpGet("127.0.0.1", port, "/metrics", 2.0);
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kUnavailable) << gone.status();
}

// A loopback TCP socket listening on a free port; closed by the destructor.
class Listener {
 public:
  Listener() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 || listen(fd_, 1) != 0 ||
        getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      return;
    }
    port_ = ntohs(address.sin_port);
  }
  ~Listener() {
    if (fd_ >= 0) close(fd_);
  }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

TEST(ServerMetricsTest, PortInUseIsAnErrorNamingTheConfigKey) {
  Listener busy;
  ASSERT_GT(busy.port(), 0);
  const std::string address = absl::StrCat("127.0.0.1:", busy.port());
  absl::StatusOr<std::unique_ptr<ServerMetrics>> metrics = ServerMetrics::Start(address);
  ASSERT_FALSE(metrics.ok());
  EXPECT_EQ(metrics.status().code(), absl::StatusCode::kInvalidArgument) << metrics.status();
  EXPECT_THAT(metrics.status().message(), HasSubstr("'metrics_address'"));
  EXPECT_THAT(metrics.status().message(), HasSubstr(address));
  EXPECT_THAT(metrics.status().message(), HasSubstr("Address already in use"));

  // Two servers on one port: the second is refused the same way.
  absl::StatusOr<std::unique_ptr<ServerMetrics>> first = ServerMetrics::Start("127.0.0.1:0");
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<std::unique_ptr<ServerMetrics>> second =
      ServerMetrics::Start(absl::StrCat("127.0.0.1:", (*first)->port()));
  ASSERT_FALSE(second.ok());
  EXPECT_THAT(second.status().message(), HasSubstr("'metrics_address'"));
}

TEST(ServerMetricsTest, BracketedIpv6AddressIsServed) {
  absl::StatusOr<std::unique_ptr<ServerMetrics>> metrics = ServerMetrics::Start("[::1]:0");
  if (!metrics.ok()) GTEST_SKIP() << "no IPv6 loopback here: " << metrics.status();
  (*metrics)->SetLiveSites(6);
  absl::StatusOr<std::string> body = e2e::HttpGet("::1", (*metrics)->port(), "/metrics");
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_THAT(Lines(*body), Contains("fedprllm_live_sites 6"));
}

TEST(ServerMetricsTest, MalformedAddressIsAnErrorNamingTheConfigKey) {
  for (const std::string address : {"9464", "127.0.0.1", "127.0.0.1:", ":9464", "127.0.0.1:99999", "127.0.0.1:94x",
                                    "127.0.0.1:-1", "127.0.0.1:1,127.0.0.1:2", "127.0.0.1:9464s", "[::1]", "[::1:0",
                                    "127.0.0.1:000009464"}) {
    absl::StatusOr<std::unique_ptr<ServerMetrics>> metrics = ServerMetrics::Start(address);
    ASSERT_FALSE(metrics.ok()) << address;
    EXPECT_EQ(metrics.status().code(), absl::StatusCode::kInvalidArgument) << address;
    EXPECT_THAT(metrics.status().message(), HasSubstr("'metrics_address'")) << address;
  }
  // Not a local address: the bind fails.
  absl::StatusOr<std::unique_ptr<ServerMetrics>> remote = ServerMetrics::Start("192.0.2.1:0");
  ASSERT_FALSE(remote.ok());
  EXPECT_THAT(remote.status().message(), HasSubstr("'metrics_address'"));
  EXPECT_THAT(remote.status().message(), HasSubstr("Cannot assign requested address"));
}

}  // namespace
}  // namespace fedprllm
