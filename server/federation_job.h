// FederationJob: the server's round state machine (docs/round_protocol.md §3-§8). It owns
// the GlobalPruner (votes and the global model), the sites (server/site_registry.h), the
// rounds and their deadlines, and the state directory. Create() resumes a job whose state
// directory already holds it (server/job_recovery.cc). The gRPC service
// (server/fedprllm_service.h) calls the thread-safe entry points below; they never block on
// I/O and call their callbacks without holding a lock. All vote counting, aggregation and
// large disk writes happen on one worker thread ("the committer"), so commits of a round are
// serialized and no lock is held across them.
//
//   ASSIGN_OR_RETURN(auto job, FederationJob::Create(config, std::move(model), tokenizer));
//   job->Start();
//   ... serve RPCs ...
//   absl::Status result = job->WaitUntilFinished();   // OK when the pruned model is written
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/mask_codec.h"
#include "engine/exact_statistics.h"
#include "engine/federation.h"
#include "secagg/secure_sum.h"
#include "proto/fedprllm.pb.h"
#include "proto/payload_convert.h"
#include "server/job_recovery.h"
#include "server/mask_plausibility.h"
#include "server/server_config.h"
#include "server/site_registry.h"
#include "server/state_store.h"

namespace fedprllm {

// Milliseconds since the Unix epoch. A seam so tests can drive deadlines.
using ClockMs = std::function<int64_t()>;
int64_t SystemClockMs();

// What a client's upload stream is allowed to contain, fixed when the stream starts.
struct UploadTicket {
  std::string client;  // identity that owns the session token
  int round = -1;
  // True if this client's upload for the round is already committed: the stream is drained
  // and acknowledged as a duplicate.
  bool duplicate = false;
  // Tensor name -> shape of every mask the round expects.
  std::shared_ptr<const std::map<std::string, std::vector<int64_t>>> tensors;
  // The job's tensor table, to resolve payload headers; outlives every stream.
  const JobTensorTable* table = nullptr;
  MaskPattern pattern;
  // The job's sparsity rule, checked on every header and decoded mask before it is spooled;
  // outlives every stream.
  std::shared_ptr<const MaskPlausibility> plausibility;
  int64_t max_chunk_bytes = 0;
};

// Measured on the server for one upload stream.
struct UploadStats {
  int64_t wire_bytes = 0;     // serialized UploadChunk messages + 5-byte gRPC prefix each
  int64_t payload_bytes = 0;  // encoded mask bytes (chunk data) only
  int64_t tensors = 0;
  int64_t weights = 0;        // mask bits covered
  double seconds = 0;         // first message to end of stream
};

// Callbacks for the server's metrics; each may be empty. Called on the committer thread,
// without the job's lock.
struct JobEvents {
  std::function<void(const std::string& site, const UploadStats& stats, double count_seconds)> upload_committed;
  std::function<void(int round, double aggregation_seconds)> round_closed;
};

class FederationJob {
 public:
  // Validates nothing further than `config` (already Validate()d); computes the model
  // fingerprint and the job id, checks that the state and output directories are writable,
  // and opens the state directory. When it already holds this job, the job is resumed from
  // it (replayed commits, re-derived decisions; docs/round_protocol.md §6); a job that
  // FAILED earlier is refused with its reason. `write_hook` runs before every state write
  // (tests crash the job through it).
  static absl::StatusOr<std::unique_ptr<FederationJob>> Create(ServerConfig config, LlamaModel model,
                                                               std::string tokenizer_path,
                                                               ClockMs clock = SystemClockMs,
                                                               StateWriteHook write_hook = nullptr);
  ~FederationJob();

  // Starts the worker thread (waiting for clients, then rounds).
  void Start();
  // Blocks until the job is DONE (OK), FAILED (the reason, ABORTED) or a shutdown was
  // requested (CANCELLED).
  absl::Status WaitUntilFinished();
  // Makes WaitUntilFinished return CANCELLED; the caller then Stop()s the job. Any thread.
  void RequestShutdown(const std::string& why);
  // After the job finished: waits until every joined client has been told (its WaitForRound
  // answered JOB_DONE/JOB_FAILED) or `timeout_ms` passes. Returns the clients still untold.
  std::vector<std::string> WaitForClientsToLearnOutcome(int64_t timeout_ms);
  // Answers every pending long poll with UNAVAILABLE and stops the worker, after the step
  // it is in (a commit, an aggregation) has been persisted. Idempotent.
  void Stop();
  // Where a restart would resume, for the shutdown log: "round 2 (OPEN, 1 of 3 committed)".
  std::string ResumePoint() const;
  // True once the job is DONE or FAILED.
  bool finished() const;
  // True if Create() found this job's state and resumed it.
  bool resumed() const { return resumed_; }

  // Adds a timing to the report's phases_seconds (e.g. "load_model_seconds").
  void RecordPhase(const std::string& name, double seconds);
  // Before Start().
  void SetEvents(JobEvents events) { events_ = std::move(events); }

  // The operator stops the job: it FAILS with `reason` after the step it is in (persisted,
  // so a restart does not resume it), and its sites are told JOB_FAILED. Any thread.
  void Abort(const std::string& reason);
  // `site` will not take part (DeclineJob): the job stops waiting for it, and fails at once
  // if too few sites are left for min_clients. A later Join of the site clears it.
  void Decline(const std::string& site, const std::string& reason);
  // The live detail for the admin API's status (docs/admin_api.md §3).
  nlohmann::json StatusDetail() const;
  // Participants not lost.
  size_t LiveSites() const;
  // Rounds decided so far, and of the job.
  int RoundsClosed() const;
  int NumRounds() const;

  const std::string& job_id() const { return job_id_; }
  const std::string& fingerprint() const { return fingerprint_; }
  const std::set<std::string>& allowlist() const { return allowlist_; }
  // Per-site state (SiteRegistry::StatusJson), for logs and tests.
  nlohmann::json SitesStatus() const;

  // ---- RPC entry points (thread-safe) ----

  // `identity` is already authenticated and allowlisted by the service.
  absl::StatusOr<v1::JoinResponse> Join(const std::string& identity, const v1::JoinRequest& request);

  using AssignmentCallback = std::function<void(absl::StatusOr<v1::RoundAssignment>)>;
  // Calls `done` exactly once: now, or when a round opens or the job ends, or after the poll
  // window, or on CancelWait. `peer` is the certificate identity ("" in insecure mode).
  // Returns the held poll's id for CancelWait, or 0 when `done` was called already.
  uint64_t WaitForRound(const v1::WaitRequest& request, const std::string& peer, AssignmentCallback done);
  // The transport of held poll `id` went away: answers it (CANCELLED) and notes that its site
  // is disconnected, so a restarted process of that site may take its session over.
  void CancelWait(uint64_t id);

  // Liveness and progress of a site (docs/round_protocol.md §8). Errors: UNAUTHENTICATED.
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& request, const std::string& peer);

  // Starts an upload stream for `round`. Errors: UNAUTHENTICATED (token), FAILED_PRECONDITION
  // (round not open or past its deadline), ABORTED (another upload of this client in flight).
  absl::StatusOr<UploadTicket> BeginUpload(const std::string& token, const std::string& peer, int round);
  // Releases a ticket whose stream failed (nothing was counted). Idempotent.
  void AbortUpload(const UploadTicket& ticket);
  using AckCallback = std::function<void(absl::StatusOr<v1::UploadAck>)>;
  // Where a (non-duplicate) ticket's masks go as they arrive: a mask set file with one
  // entry per tensor of the round, in the job's state directory under a name of its own
  // (a .tmp removed when dropped or at the next start); the commit publishes it.
  absl::StatusOr<std::unique_ptr<MaskSetWriter>> NewUploadSpool(const UploadTicket& ticket) const;
  // Queues a validated upload (its spool holds exactly the ticket's tensors, each checked by
  // MaskAssembler; null for a duplicate) for the committer; `done` is called once the commit
  // is durable, or with the reason it was refused (then no vote changed).
  void CommitUpload(UploadTicket ticket, std::unique_ptr<MaskSetWriter> spool, UploadStats stats, AckCallback done);

  // Exact strategy (server/exact_rounds.cc): checks a site's statistics record for `round`
  // as BeginUpload checks an upload (token, round open, deadline, in flight, duplicate),
  // then its layer, CRC and contents (DecodeStatistics), and queues it for the committer;
  // `done` is called once the commit is durable, or with the reason it was refused (then
  // nothing was recorded).
  void CommitStatistics(const std::string& token, const std::string& peer, const v1::StatisticsUpload& upload,
                        AckCallback done);

  // Exact strategy with secure aggregation (server/secure_rounds.cc): one step of the open
  // round's secure sum (docs/secure_aggregation.md, "Transport"). Never blocks; a step not
  // complete yet is answered ready = false.
  absl::StatusOr<v1::SecAggResponse> SecureAggregate(const v1::SecAggRequest& request, const std::string& peer);

  // The encoded decision of a CLOSED round. Errors: UNAUTHENTICATED, NOT_FOUND (no such
  // round), FAILED_PRECONDITION (not decided yet).
  absl::StatusOr<std::shared_ptr<const std::vector<v1::DecisionChunk>>> Decisions(const std::string& token,
                                                                                 const std::string& peer,
                                                                                 int round);

 private:
  enum class JobState { kWaitingForClients, kRunning, kWritingModel, kDone, kFailed };
  // What the worker does first after a resume.
  enum class ResumeAction { kNone, kCloseRound, kOpenNextRound, kWriteModel };
  // A round: what round.json holds, and what only this process needs.
  struct Round : RoundRecord {
    std::shared_ptr<const std::map<std::string, std::vector<int64_t>>> tensors;
    int64_t weights = 0;  // mask bits per client upload
    std::set<std::string> committed;
    std::set<std::string> in_flight;
  };
  struct Waiter {
    uint64_t id;
    std::string client;
    int last_completed_round;
    int64_t expires_ms;
    AssignmentCallback done;
  };
  struct CommitTask {
    UploadTicket ticket;
    std::unique_ptr<MaskSetWriter> spool;  // masks; null for a duplicate or for statistics
    std::string statistics;                // exact strategy: the site's statistics record
    UploadStats stats;
    AckCallback done;
    std::vector<std::string> contributors;  // the sites behind a secure sum
  };
  using Reply = std::pair<AssignmentCallback, absl::StatusOr<v1::RoundAssignment>>;

  FederationJob(ServerConfig config, LlamaModel model, std::string tokenizer_path, ClockMs clock,
                StateStore store, std::string fingerprint, std::string job_id, Strategy strategy,
                AggregationOptions aggregation, OutlierOptions outliers, SiteGroup site_group);
  // Logs every site's agreement with round `index`'s decision, and each outlier (worker).
  void LogStandings(int index) const;

  // The secure sum of the open round (server/secure_rounds.cc), in memory only: a restarted
  // server starts the round's aggregation again.
  struct SecureSum {
    enum class Phase { kAdvertising, kSharing, kInput, kUnmasking, kSummed };
    int round = -1;
    Phase phase = Phase::kAdvertising;
    std::unique_ptr<secagg::SecAggServer> server;
    // Per step (ADVERTISE, SHARE, MASKED_INPUT, UNMASK answer): site -> its serialized message.
    std::array<std::map<std::string, std::string>, 4> taken;
    std::vector<v1::SecAggAdvertisement> advertisements;  // relayed once kSharing
    secagg::UnmaskRequest unmask;                         // once kUnmasking
  };
  // The committed pseudo-site whose statistics record is the decoded secure sum.
  static constexpr const char* kSecureSumSite = "secure-sum";
  secagg::SessionConfig SecureSessionLocked(int round) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves the secure sum on as far as the live sites' steps allow; when it is summed, queues
  // the decoded sum's commit. Returns a reason to fail the job ("" if none).
  std::string AdvanceSecureSumLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // BeginUpload's checks and bookkeeping, for masks and statistics alike.
  absl::StatusOr<UploadTicket> TakeTicket(const std::string& token, const std::string& peer, int round);

  // A round's decision, encoded for FetchDecisions and for the state directory.
  struct Decided {
    std::string masks_sha256;  // of the round's decision mask file
    std::map<int64_t, std::pair<int64_t, int64_t>> per_layer;  // layer -> (pruned, weights)
    double seconds = 0;
  };
  // A new OPEN round `index` (layers, tensors, deadline from now); not yet in rounds_.
  Round NewRound(int index) const;
  // Closes the pruner's round: chooses the masks from the votes, one tensor at a time, into
  // the round's decision files (worker thread). With `publish` false (a resume replaying a
  // closed round) nothing is written and only the digest the mask file must have is returned.
  absl::StatusOr<Decided> Decide(int index, bool publish);
  // The decisions of the rounds closed so far, read back from their decision files (each
  // opened once, memory-mapped) as the lookup is asked for them.
  DecisionLookup StoredDecisions() const;
  // The DecisionChunk stream of a closed round, encoded from its decision files.
  absl::StatusOr<std::shared_ptr<const std::vector<v1::DecisionChunk>>> EncodeStoredDecision(int round) const;

  // job_recovery.cc: rebuilds the rounds, the votes and the global model from `state`.
  absl::Status Resume(const RecoveredJob& state);
  absl::Status ReplayRound(const RoundRecord& saved, bool closed);
  // Counts a committed statistics record again, after checking its SHA-256 (exact strategy).
  absl::Status ReplayStatistics(int round, const std::string& client, const nlohmann::json& record);
  // Adds a committed upload's votes to the open round, read from its file when the round
  // closes (server/job_recovery.cc).
  absl::Status CountUpload(const std::string& client, std::shared_ptr<const MaskSetFile> upload);
  // Exact strategy (server/exact_rounds.cc): keeps a committed statistics record of the open
  // round until it closes, and closes it: pools the records in site-name order and decides
  // like centralized Wanda into `sink`.
  absl::Status CountStatistics(int round, const std::string& client, const std::string& record);
  absl::Status CloseExactRoundInto(int round, const DecisionSink& sink);
  nlohmann::json Manifest() const;

  void WorkerLoop();
  void RunResumeAction();
  void ProcessCommit(CommitTask task);
  void Tick();
  absl::Status OpenRound(int round);
  absl::Status CloseRound(int round);
  absl::Status WriteModel();
  void Fail(const std::string& reason);
  // Sites lost now, logged; then whether the open round (or the join phase) may close.
  void CheckLiveness(int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool RoundCanCloseLocked(const Round& round) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // "site-b (calibrating layer 3 ...), site-c (lost)": the participants that have not
  // committed to `round`, or the allowlisted sites that have not joined.
  std::string MissingSitesLocked(const Round* round) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void LogWaitingLocked(int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status WriteReport(const std::string& state) ABSL_LOCKS_EXCLUDED(mu_);

  std::vector<int32_t> LayersOfRound(int round) const;
  // The answer to a long poll if there is one now.
  std::optional<v1::RoundAssignment> AnswerLocked(const std::string& client, int last_completed_round)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes and returns every waiter that can be answered now (or has expired, if `now_ms`).
  std::vector<Reply> CollectRepliesLocked(int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::string> ClientOfTokenLocked(const std::string& token, const std::string& peer)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status PersistJobLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  nlohmann::json BuildReport() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static void Deliver(std::vector<Reply> replies);

  // Immutable after construction.
  const ServerConfig config_;
  const std::string tokenizer_path_;
  const ClockMs clock_;
  const StateStore store_;
  const std::string fingerprint_;
  const std::string job_id_;
  const Strategy strategy_;
  const AggregationOptions aggregation_;
  const std::set<std::string> allowlist_;
  const int num_layers_;
  const v1::JobSpec job_spec_;
  const JobTensorTable tensor_table_;  // of job_spec_: payload headers name tensors by index
  const std::shared_ptr<const MaskPlausibility> plausibility_;
  const int64_t created_ms_;
  bool resumed_ = false;                       // set by Create() before any thread starts
  JobEvents events_;                           // set before Start()
  ResumeAction resume_action_ = ResumeAction::kNone;  // worker-only after Start()

  // Worker-thread only: the votes and the global model; for the exact strategy, the open
  // round's committed statistics by site.
  GlobalPruner pruner_;
  std::map<std::string, LayerStatistics> round_statistics_;

  mutable absl::Mutex mu_;
  JobState state_ ABSL_GUARDED_BY(mu_) = JobState::kWaitingForClients;
  std::string failure_ ABSL_GUARDED_BY(mu_);
  SiteRegistry sites_ ABSL_GUARDED_BY(mu_);
  int64_t join_phase_started_ms_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t last_waiting_log_ms_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_waiter_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::set<std::string> told_outcome_ ABSL_GUARDED_BY(mu_);
  std::vector<Round> rounds_ ABSL_GUARDED_BY(mu_);
  std::vector<Waiter> waiters_ ABSL_GUARDED_BY(mu_);
  std::deque<CommitTask> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::string shutdown_requested_ ABSL_GUARDED_BY(mu_);
  nlohmann::json phases_ ABSL_GUARDED_BY(mu_) = nlohmann::json::object();
  int64_t first_round_opened_ms_ ABSL_GUARDED_BY(mu_) = 0;
  std::string abort_reason_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> declined_ ABSL_GUARDED_BY(mu_);  // site -> its reason
  // Per site: wire bytes of every committed upload, and seconds from the open round's
  // opening to this site's commit (-1 before it commits).
  struct SiteTraffic {
    int64_t bytes = 0;
    int commit_round = -1;
    double commit_seconds = -1;
  };
  std::map<std::string, SiteTraffic> traffic_ ABSL_GUARDED_BY(mu_);
  std::optional<SecureSum> secure_ ABSL_GUARDED_BY(mu_);

  std::thread worker_;
};

}  // namespace fedprllm
