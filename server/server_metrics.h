// The server's Prometheus metrics (docs/metrics.md): jobs by state, rounds, committed
// uploads per site, vote counting speed, connected and live sites, and the build. The job
// code updates them through the methods below; Prometheus scrapes them over HTTP at
// http://<metrics_address>/metrics (config key metrics_address; "" serves no endpoint).
//
//   ASSIGN_OR_RETURN(std::unique_ptr<ServerMetrics> metrics, ServerMetrics::Start(config.metrics_address));
//   metrics->UploadCommitted(site, wire_bytes, upload_seconds, weights, count_seconds);
//   metrics->RoundClosed(aggregation_seconds);
//
// Every update method is thread-safe, never blocks on I/O and costs a few atomic operations
// (a map lookup under a short lock for labelled series): call it once per event, not per
// weight. The HTTP endpoint runs on a thread of its own (server/metrics_http.h).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace prometheus {
class Counter;
template <typename T>
class Family;
class Gauge;
class Histogram;
class Registry;
}  // namespace prometheus

namespace fedprllm {

class MetricsHttpServer;

class ServerMetrics {
 public:
  // The job states fedprllm_jobs always reports (0 when SetJobCounts leaves one out).
  static constexpr const char* kJobStates[] = {"queued", "running", "done", "failed", "aborted"};

  // Builds the registry and, unless `listen_address` is "", serves it at
  // http://<listen_address>/metrics. `listen_address` is "host:port" with a numeric port
  // (0 picks a free one, see port()); host is an IP address ("127.0.0.1", "0.0.0.0" for
  // every IPv4 interface, "[::1]", "[::]") or a name that resolves ("localhost").
  // Errors are INVALID_ARGUMENT naming config key 'metrics_address': a malformed address, or
  // one that cannot be listened on, with the reason ("cannot bind 127.0.0.1:9464: Address
  // already in use").
  static absl::StatusOr<std::unique_ptr<ServerMetrics>> Start(const std::string& listen_address);

  // Stops the HTTP endpoint (promptly; a scrape in progress is cut off) and frees the
  // registry.
  ~ServerMetrics();
  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  // The TCP port the endpoint listens on; 0 when Start got "".
  int port() const { return port_; }

  // fedprllm_jobs{state}: the number of jobs in each state, keyed by state name. A state
  // seen before (or one of kJobStates) that `counts_by_state` leaves out is set to 0.
  void SetJobCounts(const std::map<std::string, int>& counts_by_state) ABSL_LOCKS_EXCLUDED(mutex_);

  // One round closed: fedprllm_rounds_closed_total += 1, and `aggregation_seconds` (the
  // time the close took, counting and mask selection) goes into
  // fedprllm_aggregation_duration_seconds.
  void RoundClosed(double aggregation_seconds);

  // One site's upload committed in a round: `wire_bytes` is the size of its gRPC messages
  // (fedprllm_upload_bytes_received_total{site}), `upload_seconds` the time from its first
  // chunk to the commit (fedprllm_upload_duration_seconds), `weights` the mask bits counted
  // into the vote (fedprllm_votes_counted_total) in `count_seconds`; weights / count_seconds
  // becomes fedprllm_vote_counting_weights_per_second when count_seconds > 0. Negative or
  // non-finite numbers are left out of the metric they feed.
  void UploadCommitted(const std::string& site, int64_t wire_bytes, double upload_seconds, int64_t weights,
                       double count_seconds);

  // fedprllm_live_sites: sites of the running job that are neither lost nor finished.
  void SetLiveSites(int sites);
  // fedprllm_connected_sites: sites with an open stream (or a poll) to the server now.
  void SetConnectedSites(int sites);

  // fedprllm_current_round{job}: the round `job` is in, numbered from 0 as in
  // docs/round_protocol.md (after round k closes: k + 1).
  void SetCurrentRound(const std::string& job, int round) ABSL_LOCKS_EXCLUDED(mutex_);
  // Drops fedprllm_current_round{job} (for a job that ended), so old jobs do not linger.
  void RemoveJob(const std::string& job) ABSL_LOCKS_EXCLUDED(mutex_);

  // Every metric in Prometheus' text exposition format (version 0.0.4), as /metrics serves
  // it. For tests and logs; thread-safe.
  std::string Scrape() const;

 private:
  ServerMetrics();

  const std::shared_ptr<prometheus::Registry> registry_;
  // Families and unlabelled series, owned by registry_.
  prometheus::Family<prometheus::Gauge>& jobs_;
  prometheus::Counter& rounds_closed_;
  prometheus::Family<prometheus::Counter>& uploads_committed_;
  prometheus::Family<prometheus::Counter>& upload_bytes_;
  prometheus::Histogram& upload_duration_;
  prometheus::Histogram& aggregation_duration_;
  prometheus::Gauge& live_sites_;
  prometheus::Gauge& connected_sites_;
  prometheus::Counter& votes_counted_;
  prometheus::Gauge& vote_counting_rate_;
  prometheus::Family<prometheus::Gauge>& current_round_;

  // Serialises SetJobCounts and SetCurrentRound/RemoveJob, whose series come and go.
  absl::Mutex mutex_;
  std::map<std::string, prometheus::Gauge*> job_state_gauges_ ABSL_GUARDED_BY(mutex_);
  std::map<std::string, prometheus::Gauge*> current_round_gauges_ ABSL_GUARDED_BY(mutex_);

  // Declared last: destroyed first, so no scrape reads the registry while it goes away.
  std::unique_ptr<MetricsHttpServer> http_;
  int port_ = 0;
};

}  // namespace fedprllm
