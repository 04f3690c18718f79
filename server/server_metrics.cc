// The Prometheus registry and its series (prometheus-cpp core), served by MetricsHttpServer;
// prometheus-cpp's exceptions are caught in Start, the one wall for this library.
#include "server/server_metrics.h"

#include <cmath>
#include <exception>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/build_info.h"
#include "config/yaml_config.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "server/metrics_http.h"

namespace fedprllm {
namespace {

constexpr char kConfigKey[] = "metrics_address";

// Upper bounds, in seconds. An upload spans its chunks' network time (seconds to minutes
// for a large model over a WAN); a round close counts and selects over every weight.
const prometheus::Histogram::BucketBoundaries& UploadBuckets() {
  static const auto* buckets =
      new prometheus::Histogram::BucketBoundaries{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};
  return *buckets;
}
const prometheus::Histogram::BucketBoundaries& AggregationBuckets() {
  static const auto* buckets =
      new prometheus::Histogram::BucketBoundaries{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300};
  return *buckets;
}

bool NonNegative(double value) { return std::isfinite(value) && value >= 0; }

// The host and port of "host:port" or "[v6 address]:port", port a decimal in [0, 65535].
absl::StatusOr<std::pair<std::string, int>> SplitListenAddress(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return ConfigKeyError(kConfigKey, absl::StrCat("\"", address, "\" is not host:port"));
  }
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty() || host.find_first_of("[], ") != std::string::npos) {
    return ConfigKeyError(kConfigKey, absl::StrCat("\"", address, "\": bad host"));
  }
  const std::string port_text = address.substr(colon + 1);
  int port = -1;
  if (port_text.empty() || port_text.size() > 5 || port_text.find_first_not_of("0123456789") != std::string::npos ||
      !absl::SimpleAtoi(port_text, &port) || port > 65535) {
    return ConfigKeyError(kConfigKey, absl::StrCat("\"", address, "\": port must be a number in [0, 65535]"));
  }
  return std::make_pair(std::move(host), port);
}

}  // namespace

ServerMetrics::ServerMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      jobs_(prometheus::BuildGauge()
                .Name("fedprllm_jobs")
                .Help("Jobs the server knows, by state.")
                .Register(*registry_)),
      rounds_closed_(prometheus::BuildCounter()
                         .Name("fedprllm_rounds_closed_total")
                         .Help("Rounds closed (votes aggregated and the round's mask chosen), all jobs.")
                         .Register(*registry_)
                         .Add({})),
      uploads_committed_(prometheus::BuildCounter()
                             .Name("fedprllm_uploads_committed_total")
                             .Help("Site uploads committed into a round's vote, by site.")
                             .Register(*registry_)),
      upload_bytes_(prometheus::BuildCounter()
                        .Name("fedprllm_upload_bytes_received_total")
                        .Help("Bytes of gRPC messages of committed uploads, by site.")
                        .Register(*registry_)),
      upload_duration_(prometheus::BuildHistogram()
                           .Name("fedprllm_upload_duration_seconds")
                           .Help("Time from an upload's first message to its commit, in seconds.")
                           .Register(*registry_)
                           .Add({}, UploadBuckets())),
      aggregation_duration_(prometheus::BuildHistogram()
                                .Name("fedprllm_aggregation_duration_seconds")
                                .Help("Time a round close took (aggregation and mask selection), in seconds.")
                                .Register(*registry_)
                                .Add({}, AggregationBuckets())),
      live_sites_(prometheus::BuildGauge()
                      .Name("fedprllm_live_sites")
                      .Help("Sites of the running job that are neither lost nor finished.")
                      .Register(*registry_)
                      .Add({})),
      connected_sites_(prometheus::BuildGauge()
                           .Name("fedprllm_connected_sites")
                           .Help("Sites with an open call to the server now.")
                           .Register(*registry_)
                           .Add({})),
      votes_counted_(prometheus::BuildCounter()
                         .Name("fedprllm_votes_counted_total")
                         .Help("Mask bits (one per weight per site) counted into votes.")
                         .Register(*registry_)
                         .Add({})),
      vote_counting_rate_(prometheus::BuildGauge()
                              .Name("fedprllm_vote_counting_weights_per_second")
                              .Help("Weights per second the last committed upload was counted at.")
                              .Register(*registry_)
                              .Add({})),
      current_round_(prometheus::BuildGauge()
                         .Name("fedprllm_current_round")
                         .Help("The round each unfinished job is in.")
                         .Register(*registry_)) {
  prometheus::BuildGauge()
      .Name("fedprllm_build_info")
      .Help("Always 1; the labels say which build is running.")
      .Register(*registry_)
      .Add({{"version", kBuildVersion}, {"commit", kBuildCommit}})
      .Set(1);
  absl::MutexLock lock(&mutex_);
  for (const char* state : kJobStates) job_state_gauges_[state] = &jobs_.Add({{"state", state}});
}

ServerMetrics::~ServerMetrics() = default;

absl::StatusOr<std::unique_ptr<ServerMetrics>> ServerMetrics::Start(const std::string& listen_address) {
  std::pair<std::string, int> host_port;
  if (!listen_address.empty()) {
    absl::StatusOr<std::pair<std::string, int>> split = SplitListenAddress(listen_address);
    if (!split.ok()) return split.status();
    host_port = *std::move(split);
  }
  std::unique_ptr<ServerMetrics> metrics;
  // prometheus-cpp reports a bad metric or label name, or unsorted buckets, by throwing;
  // none should happen with the fixed names above, but none may escape either.
  try {
    metrics.reset(new ServerMetrics());
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("building the metrics registry: ", e.what()));
  }
  if (listen_address.empty()) return metrics;
  ServerMetrics* raw = metrics.get();  // outlives http_, which is destroyed first
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> http =
      MetricsHttpServer::Start(host_port.first, host_port.second, "/metrics", [raw] { return raw->Scrape(); });
  if (!http.ok()) {
    return ConfigKeyError(kConfigKey,
                          absl::StrCat("cannot serve metrics on \"", listen_address, "\": ", http.status().message()));
  }
  metrics->http_ = *std::move(http);
  metrics->port_ = metrics->http_->port();
  return metrics;
}

void ServerMetrics::SetJobCounts(const std::map<std::string, int>& counts_by_state) {
  absl::MutexLock lock(&mutex_);
  for (const auto& [state, count] : counts_by_state) {
    auto it = job_state_gauges_.find(state);
    if (it == job_state_gauges_.end()) it = job_state_gauges_.emplace(state, &jobs_.Add({{"state", state}})).first;
    it->second->Set(count);
  }
  for (const auto& [state, gauge] : job_state_gauges_) {
    if (counts_by_state.count(state) == 0) gauge->Set(0);
  }
}

void ServerMetrics::RoundClosed(double aggregation_seconds) {
  rounds_closed_.Increment();
  if (NonNegative(aggregation_seconds)) aggregation_duration_.Observe(aggregation_seconds);
}

void ServerMetrics::UploadCommitted(const std::string& site, int64_t wire_bytes, double upload_seconds,
                                    int64_t weights, double count_seconds) {
  uploads_committed_.Add({{"site", site}}).Increment();
  prometheus::Counter& bytes = upload_bytes_.Add({{"site", site}});
  if (wire_bytes >= 0) bytes.Increment(static_cast<double>(wire_bytes));
  if (NonNegative(upload_seconds)) upload_duration_.Observe(upload_seconds);
  if (weights >= 0) {
    votes_counted_.Increment(static_cast<double>(weights));
    if (NonNegative(count_seconds) && count_seconds > 0) {
      vote_counting_rate_.Set(static_cast<double>(weights) / count_seconds);
    }
  }
}

void ServerMetrics::SetLiveSites(int sites) { live_sites_.Set(sites); }

void ServerMetrics::SetConnectedSites(int sites) { connected_sites_.Set(sites); }

void ServerMetrics::SetCurrentRound(const std::string& job, int round) {
  absl::MutexLock lock(&mutex_);
  auto it = current_round_gauges_.find(job);
  if (it == current_round_gauges_.end()) it = current_round_gauges_.emplace(job, &current_round_.Add({{"job", job}})).first;
  it->second->Set(round);
}

void ServerMetrics::RemoveJob(const std::string& job) {
  absl::MutexLock lock(&mutex_);
  auto it = current_round_gauges_.find(job);
  if (it == current_round_gauges_.end()) return;
  current_round_.Remove(it->second);
  current_round_gauges_.erase(it);
}

std::string ServerMetrics::Scrape() const { return prometheus::TextSerializer().Serialize(registry_->Collect()); }

}  // namespace fedprllm
