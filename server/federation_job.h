// FederationJob: the server's round state machine (docs/round_protocol.md §3-§6). It owns
// the GlobalPruner (votes and the global model), the session tokens, the rounds and their
// deadlines, and the state directory. The gRPC service (server/fedprllm_service.h) calls the
// thread-safe entry points below; they never block on I/O and call their callbacks without
// holding a lock. All vote counting, aggregation and disk writes happen on one worker thread
// ("the committer"), so commits of a round are serialized and no lock is held across I/O.
//
//   ASSIGN_OR_RETURN(auto job, FederationJob::Create(config, std::move(model), tokenizer));
//   job->Start();
//   ... serve RPCs ...
//   absl::Status result = job->WaitUntilFinished();   // OK when the pruned model is written
#pragma once

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
#include "engine/federation.h"
#include "proto/fedprllm.pb.h"
#include "proto/payload_convert.h"
#include "server/server_config.h"
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

class FederationJob {
 public:
  // Validates nothing further than `config` (already Validate()d); computes the model
  // fingerprint and the job id, and creates the state directory.
  static absl::StatusOr<std::unique_ptr<FederationJob>> Create(ServerConfig config, LlamaModel model,
                                                               std::string tokenizer_path,
                                                               ClockMs clock = SystemClockMs);
  ~FederationJob();

  // Starts the worker thread (waiting for clients, then rounds).
  void Start();
  // Blocks until the job is DONE (OK) or FAILED (the reason).
  absl::Status WaitUntilFinished();
  // After the job finished: waits until every joined client has been told (its WaitForRound
  // answered JOB_DONE/JOB_FAILED) or `timeout_ms` passes. Returns the clients still untold.
  std::vector<std::string> WaitForClientsToLearnOutcome(int64_t timeout_ms);
  // Answers every pending long poll with UNAVAILABLE and stops the worker. Idempotent.
  void Stop();

  // Adds a timing to the report's phases_seconds (e.g. "load_model_seconds").
  void RecordPhase(const std::string& name, double seconds);

  const std::string& job_id() const { return job_id_; }
  const std::string& fingerprint() const { return fingerprint_; }
  const std::set<std::string>& allowlist() const { return allowlist_; }

  // ---- RPC entry points (thread-safe) ----

  // `identity` is already authenticated and allowlisted by the service.
  absl::StatusOr<v1::JoinResponse> Join(const std::string& identity, const v1::JoinRequest& request);

  using AssignmentCallback = std::function<void(absl::StatusOr<v1::RoundAssignment>)>;
  // Calls `done` exactly once: now, or when a round opens or the job ends, or after the poll
  // window. `peer` is the certificate identity ("" in insecure mode).
  void WaitForRound(const v1::WaitRequest& request, const std::string& peer, AssignmentCallback done);

  // Starts an upload stream for `round`. Errors: UNAUTHENTICATED (token), FAILED_PRECONDITION
  // (round not open or past its deadline), ABORTED (another upload of this client in flight).
  absl::StatusOr<UploadTicket> BeginUpload(const std::string& token, const std::string& peer, int round);
  // Releases a ticket whose stream failed (nothing was counted). Idempotent.
  void AbortUpload(const UploadTicket& ticket);
  using AckCallback = std::function<void(absl::StatusOr<v1::UploadAck>)>;
  // Queues a validated upload (exactly the ticket's tensors, each checked by MaskAssembler)
  // for the committer; `done` is called once the commit is durable, or with the reason it
  // was refused (then no vote changed).
  void CommitUpload(UploadTicket ticket, std::map<std::string, PackedMask> masks, UploadStats stats,
                    AckCallback done);

  // The encoded decision of a CLOSED round. Errors: UNAUTHENTICATED, NOT_FOUND (no such
  // round), FAILED_PRECONDITION (not decided yet).
  absl::StatusOr<std::shared_ptr<const std::vector<v1::DecisionChunk>>> Decisions(const std::string& token,
                                                                                 const std::string& peer,
                                                                                 int round);

 private:
  enum class JobState { kWaitingForClients, kRunning, kWritingModel, kDone, kFailed };
  enum class RoundPhase { kOpen, kAggregating, kClosed };
  struct Round {
    int index = 0;
    std::vector<int32_t> layers;
    RoundPhase phase = RoundPhase::kOpen;
    int64_t opened_ms = 0;
    int64_t deadline_ms = 0;
    int extensions = 0;
    std::shared_ptr<const std::map<std::string, std::vector<int64_t>>> tensors;
    int64_t weights = 0;  // mask bits per client upload
    std::set<std::string> committed;
    std::set<std::string> in_flight;
    nlohmann::json commits = nlohmann::json::array();  // commit records, in order
    int64_t closed_ms = 0;
    double aggregation_seconds = 0;
    std::shared_ptr<const std::vector<v1::DecisionChunk>> decision;
  };
  struct Waiter {
    std::string client;
    int last_completed_round;
    int64_t expires_ms;
    AssignmentCallback done;
  };
  struct CommitTask {
    UploadTicket ticket;
    std::map<std::string, PackedMask> masks;
    UploadStats stats;
    AckCallback done;
  };
  using Reply = std::pair<AssignmentCallback, absl::StatusOr<v1::RoundAssignment>>;

  FederationJob(ServerConfig config, LlamaModel model, std::string tokenizer_path, ClockMs clock,
                StateStore store, std::string fingerprint, std::string job_id, Strategy strategy,
                AggregationOptions aggregation);

  void WorkerLoop();
  void ProcessCommit(CommitTask task);
  void Tick();
  absl::Status OpenRound(int round);
  absl::Status CloseRound(int round);
  absl::Status WriteModel();
  void Fail(const std::string& reason);

  int NumRounds() const;
  std::vector<int32_t> LayersOfRound(int round) const;
  // The answer to a long poll if there is one now.
  std::optional<v1::RoundAssignment> AnswerLocked(const std::string& client, int last_completed_round)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes and returns every waiter that can be answered now (or has expired, if `now_ms`).
  std::vector<Reply> CollectRepliesLocked(int64_t now_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::string> ClientOfTokenLocked(const std::string& token, const std::string& peer) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  nlohmann::json RoundJsonLocked(const Round& round) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
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
  const int64_t created_ms_;

  // Worker-thread only: the votes and the global model.
  GlobalPruner pruner_;

  mutable absl::Mutex mu_;
  JobState state_ ABSL_GUARDED_BY(mu_) = JobState::kWaitingForClients;
  std::string failure_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> token_to_client_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> client_to_token_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> joined_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> told_outcome_ ABSL_GUARDED_BY(mu_);
  std::vector<Round> rounds_ ABSL_GUARDED_BY(mu_);
  std::vector<Waiter> waiters_ ABSL_GUARDED_BY(mu_);
  std::deque<CommitTask> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  nlohmann::json phases_ ABSL_GUARDED_BY(mu_) = nlohmann::json::object();
  int64_t first_round_opened_ms_ ABSL_GUARDED_BY(mu_) = 0;

  std::thread worker_;
};

}  // namespace fedprllm
