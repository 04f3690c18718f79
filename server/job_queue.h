// JobQueue: the server's jobs room. It knows every job (the config's own, those listed in
// its `jobs:`, those submitted through the admin API), keeps each one's summary in
// jobs_dir/NAME/status.json, runs them one at a time in submission order, and resumes the
// unfinished ones after a restart (each job's own state directory resumes its rounds,
// docs/round_protocol.md §6). It also answers the sites' WaitForJob long polls with the
// running job, and tracks which sites are connected between jobs. Thread-safe.
//
//   JobQueue jobs(config, metrics.get(), log_sink);
//   RETURN_IF_ERROR(jobs.Load());
//   std::thread runner([&] { result = jobs.Run(); });   // until RequestShutdown
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "proto/fedprllm.pb.h"
#include "server/federation_job.h"
#include "server/job_config.h"
#include "server/job_log.h"
#include "server/server_config.h"
#include "server/server_metrics.h"

namespace fedprllm {

class JobQueue {
 public:
  // `metrics` and `log` may be null; both outlive the queue.
  JobQueue(ServerConfig server, ServerMetrics* metrics, JobLogSink* log, ClockMs clock = SystemClockMs);
  ~JobQueue();

  // Queues the config's own job, then every known job of jobs_dir that has not ended (in
  // submission order), then the config's `jobs:` files not known yet. An unreadable job
  // file in `jobs:` fails the start, naming it.
  absl::Status Load();
  // Runs the queued jobs one by one until RequestShutdown(), or with exit_when_idle until
  // none is left. OK, or the first failed job's reason with exit_when_idle.
  absl::Status Run();
  // Stops Run() after the running job's current step (it stays resumable). Any thread.
  void RequestShutdown(const std::string& why);

  // ---- Admin API (docs/admin_api.md) ----
  // Validates and queues a job YAML; returns it and the jobs ahead of it.
  absl::StatusOr<std::pair<v1::JobSummary, int>> Submit(const std::string& yaml_text, const std::string& source);
  std::vector<v1::JobSummary> List() const;
  // `name` "" = the running job, else the last to end. The detail is "{}" for a job that is
  // not running.
  absl::StatusOr<std::pair<v1::JobSummary, nlohmann::json>> Status(const std::string& name) const;
  // `by`: the operator's identity, for the log and the job's reason.
  absl::StatusOr<v1::JobSummary> Abort(const std::string& name, const std::string& reason, const std::string& by);
  std::vector<v1::SiteSummary> Sites() const;
  // The job's log file and whether the job has ended. NOT_FOUND for an unknown job.
  absl::StatusOr<std::pair<std::string, bool>> LogOf(const std::string& name) const;

  // ---- Site side ----
  // The running job, or null.
  std::shared_ptr<FederationJob> Running() const;
  // The job a site's Join names (`job_id` "" = the running one). FAILED_PRECONDITION, with
  // the job's outcome, for a job that is not running; UNAVAILABLE when none runs.
  absl::StatusOr<std::shared_ptr<FederationJob>> JobToJoin(const std::string& job_id) const;
  using OfferCallback = std::function<void(absl::StatusOr<v1::JobOffer>)>;
  // Calls `done` once: now if the running job names `site` and is not skipped, else when
  // such a job starts, after poll_window_seconds (OFFER_STATE_NONE), or on CancelJobWait.
  // Returns the poll's id, or 0 when `done` was called already.
  uint64_t WaitForJob(const std::string& site, const v1::JobWaitRequest& request, OfferCallback done);
  void CancelJobWait(uint64_t id);
  absl::Status Decline(const std::string& site, const std::string& job_id, const std::string& reason);
  // Any RPC of `site`: it is connected. `certificate_pem`: the certificate it called with
  // ("" in insecure mode); one expiring within 30 days is warned about once and shown by
  // Sites().
  void NoteSeen(const std::string& site, const std::string& certificate_pem = "");

 private:
  struct Entry {
    int seq = 0;
    bool own = false;  // the config's own job: not kept in jobs_dir
    JobDefinition definition;
    v1::JobSummary summary;
    std::string dir;       // jobs_dir/NAME, "" for the own job
    std::string log_path;  // where its lines go
    std::string abort_reason;
  };
  struct OfferWaiter {
    uint64_t id;
    std::string site;
    std::vector<std::string> skip;
    int64_t expires_ms;
    OfferCallback done;
  };
  struct SiteSeen {
    int64_t last_seen_ms = 0;
    int held_polls = 0;
    size_t certificate_hash = 0;           // of the PEM last seen
    int64_t certificate_expires_ms = 0;    // its notAfter; 0 = not seen
  };
  using Reply = std::pair<OfferCallback, absl::StatusOr<v1::JobOffer>>;

  absl::Status RunOne(Entry* entry);
  // Records an ended job (state, reason, times) and persists it.
  void Ended(Entry* entry, v1::JobState state, const std::string& reason) ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status AddLocked(JobDefinition definition, bool own, bool persist) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A job of jobs_dir from its status.json and job.yaml; one that had not ended is queued.
  std::unique_ptr<Entry> EntryFromStatus(const nlohmann::json& status) const;
  absl::Status PersistLocked(const Entry& entry) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  const Entry* FindLocked(const std::string& name) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Entry* FindLocked(const std::string& name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::JobSummary SummaryLocked(const Entry& entry) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::optional<v1::JobOffer> OfferLocked(const std::string& site, const std::vector<std::string>& skip) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::vector<Reply> CollectOffersLocked(int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UpdateJobCountsLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void TickerLoop();

  const ServerConfig server_;
  ServerMetrics* const metrics_;
  JobLogSink* const log_;
  const ClockMs clock_;

  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<Entry>> entries_ ABSL_GUARDED_BY(mu_);  // by seq
  Entry* running_entry_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::shared_ptr<FederationJob> running_ ABSL_GUARDED_BY(mu_);
  std::string shutdown_ ABSL_GUARDED_BY(mu_);
  std::vector<OfferWaiter> offer_waiters_ ABSL_GUARDED_BY(mu_);
  uint64_t next_waiter_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<std::string, SiteSeen> seen_ ABSL_GUARDED_BY(mu_);
  bool stop_ticker_ ABSL_GUARDED_BY(mu_) = false;
  std::thread ticker_;
};

}  // namespace fedprllm
