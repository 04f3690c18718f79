// The gRPC callback service: maps each rpc onto FederationJob, and streams uploads through
// the payload validators before anything reaches the job.
#include "server/fedprllm_service.h"

#include <grpcpp/alarm.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/build_info.h"
#include "common/status_macros.h"
#include "proto/payload_convert.h"
#include "server/peer_identity.h"
#include "server/transport_limits.h"

namespace fedprllm {
namespace {

// A session call when no job runs: the site joins again, which tells it why.
absl::Status NoRunningJob() { return absl::UnauthenticatedError("no job is running; join again"); }

// UploadPayloads: validates each message as it arrives (token and round fixed by the first
// message; every header and chunk through MaskAssembler), writes each mask to the stream's
// spool file as soon as it is decoded and checked, and hands the complete spool to the
// job's committer at end of stream. Memory holds one tensor at a time. Any error finishes
// the call at once and drops everything this stream carried (the spool is deleted).
//
// Bounds (docs/round_protocol.md §9): a stream waiting longer than `idle_timeout` for its
// next message (the first included) is finished with DEADLINE_EXCEEDED by an alarm; a
// stream carrying more messages than MaxUploadMessages() of its round, a drained duplicate
// included, or more keepalives than one per second of its age plus 10, is refused with
// RESOURCE_EXHAUSTED.
//
// Threads: gRPC runs OnReadDone and OnDone, the alarm runs OnIdleAlarm on gRPC's executor.
// Exactly one path calls Finish (ClaimFinish). The alarm claims only while a read is
// pending, so it never races with OnReadDone on the stream state; once it claimed, the
// pending read's OnReadDone returns at once. The reactor is deleted by whichever of OnDone
// and the last alarm callback runs last.
class UploadReactor final : public grpc::ServerReadReactor<v1::UploadChunk> {
 public:
  using Clock = std::chrono::steady_clock;

  UploadReactor(std::shared_ptr<FederationJob> job, std::string peer, v1::UploadAck* ack,
                std::chrono::seconds idle_timeout)
      : job_(std::move(job)), peer_(std::move(peer)), ack_(ack), idle_timeout_(idle_timeout), start_(Clock::now()) {
    grpc::Alarm* alarm = nullptr;
    {
      absl::MutexLock lock(&mu_);
      waiting_since_ = start_;
      read_pending_ = true;
      alarm = NewAlarmLocked();
    }
    SetAlarm(alarm, start_ + idle_timeout_);
    StartRead(&message_);
  }

  void OnReadDone(bool ok) override {
    {
      absl::MutexLock lock(&mu_);
      read_pending_ = false;
      if (closing_) return;  // the idle alarm finished the call while this read was pending
    }
    if (!ok) {
      EndOfStream();
      return;
    }
    if (absl::Status s = Consume(); !s.ok()) {
      Refuse(s);
      return;
    }
    message_.Clear();
    {
      absl::MutexLock lock(&mu_);
      waiting_since_ = Clock::now();
      read_pending_ = true;
    }
    StartRead(&message_);
  }

  void OnDone() override {
    if (ticket_.has_value() && !handed_off_) job_->AbortUpload(*ticket_);
    grpc::Alarm* alarm = nullptr;
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
      alarm = alarm_.get();  // no longer replaced: OnIdleAlarm re-arms only before done_
      ++alarms_pending_;     // keeps the reactor (and `alarm`) alive until Cancel returns
    }
    if (alarm != nullptr) alarm->Cancel();  // its callback then runs with fired == false
    ReleaseAlarmRef();
  }

 private:
  // A fresh alarm in alarm_ (the previous one, if any, has fired), counted as pending.
  grpc::Alarm* NewAlarmLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    alarm_ = std::make_unique<grpc::Alarm>();
    ++alarms_pending_;
    return alarm_.get();
  }

  // Outside mu_: gRPC delivers the callback on its executor, but a lock held here could
  // still meet it if it ran inline.
  void SetAlarm(grpc::Alarm* alarm, Clock::time_point when) {
    const auto wait = std::max<Clock::duration>(when - Clock::now(), std::chrono::milliseconds(10));
    alarm->Set(std::chrono::system_clock::now() + wait, [this](bool fired) { OnIdleAlarm(fired); });
  }

  void OnIdleAlarm(bool fired) {
    bool expired = false;
    grpc::Alarm* next = nullptr;
    Clock::time_point next_at;
    {
      absl::MutexLock lock(&mu_);
      if (fired && !done_ && !closing_) {
        const Clock::time_point now = Clock::now();
        if (read_pending_ && now >= waiting_since_ + idle_timeout_) {
          closing_ = true;  // ClaimFinish: this alarm finishes the call
          expired = true;
        } else {
          // Waiting, but not for long enough yet; or a message is being handled (look again
          // one timeout later). Replacing alarm_ inside its own callback is safe: gRPC keeps
          // the fired alarm's state alive until this callback returns.
          next_at = read_pending_ ? waiting_since_ + idle_timeout_ : now + idle_timeout_;
          next = NewAlarmLocked();
        }
      }
    }
    if (next != nullptr) SetAlarm(next, next_at);
    if (expired) {
      // No read callback runs now (a read is pending and returns at once), so the stream
      // state is this thread's.
      RefuseClaimed(absl::DeadlineExceededError(
          absl::StrCat("no upload message for ", idle_timeout_.count(), " s (upload_idle_timeout_seconds)",
                       ticket_.has_value() ? absl::StrCat(" in round ", ticket_->round) : std::string(),
                       "; the stream is closed and nothing of it counted")));
    }
    ReleaseAlarmRef();
  }

  void ReleaseAlarmRef() {
    bool last = false;
    {
      absl::MutexLock lock(&mu_);
      last = --alarms_pending_ == 0 && done_;
    }
    if (last) delete this;
  }

  // True for the one caller that may call Finish; afterwards the idle alarm does nothing.
  bool ClaimFinish() {
    absl::MutexLock lock(&mu_);
    if (closing_) return false;
    closing_ = true;
    return true;
  }

  absl::Status Consume() {
    stats_.wire_bytes += GrpcMessageBytes(message_);
    if (message_.body_case() == v1::UploadChunk::kKeepalive) return Keepalive();
    ++messages_;
    if (!ticket_.has_value()) {
      ASSIGN_OR_RETURN(UploadTicket ticket, job_->BeginUpload(message_.session_token(), peer_, message_.round()));
      ticket_ = std::move(ticket);
      token_ = message_.session_token();
      max_messages_ = MaxUploadMessages(*ticket_->tensors, ticket_->max_chunk_bytes);
      if (!ticket_->duplicate) {
        ASSIGN_OR_RETURN(spool_, job_->NewUploadSpool(*ticket_));
      }
    } else if (messages_ > max_messages_) {
      // Checked before the duplicate drain below, so a drained stream is bounded too.
      return absl::ResourceExhaustedError(absl::StrCat(
          "upload stream for round ", ticket_->round, " carried more than ", max_messages_,
          " messages, the most an upload of its ", ticket_->tensors->size(), " tensors in chunks of ",
          ticket_->max_chunk_bytes, " bytes can need"));
    } else if (!(message_.session_token().empty() && message_.round() == 0) &&
               (message_.session_token() != token_ || message_.round() != ticket_->round)) {
      // Later messages either leave both fields unset (the usual, saving ~36 bytes per
      // message) or repeat them exactly.
      return absl::FailedPreconditionError(absl::StrCat("session token or round changed within the upload stream (round ",
                                                        ticket_->round, " then ", message_.round(), ")"));
    }
    if (ticket_->duplicate) return absl::OkStatus();  // drained without validation
    switch (message_.body_case()) {
      case v1::UploadChunk::kHeader:
        return ForSite(StartPayload(message_.header()));
      case v1::UploadChunk::kChunk: {
        if (!current_.has_value()) {
          return absl::InvalidArgumentError(
              absl::StrCat("chunk ", message_.chunk().chunk_index(), " arrived before any payload header"));
        }
        const int64_t size = static_cast<int64_t>(message_.chunk().data().size());
        RETURN_IF_ERROR(ForSite(current_->AddChunk(ChunkFromProto(message_.mutable_chunk()))));
        stats_.payload_bytes += size;
        RETURN_IF_ERROR(ForSite(Spool(current_->TakeDecoded())));
        if (current_->complete()) return ForSite(FinishPayload());
        return absl::OkStatus();
      }
      default:
        return absl::InvalidArgumentError("upload message carries neither a header nor a chunk");
    }
  }

  absl::Status StartPayload(const v1::TensorHeader& proto_header) {
    if (current_.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat(current_->header().Label(),
                                                     "header of the next payload arrived before this one's last chunk"));
    }
    if (proto_header.kind() != v1::PAYLOAD_KIND_PRUNE_MASK) {
      // Check 1 before anything else: a kind this server does not take.
      return absl::UnimplementedError(absl::StrCat("payload kind ", static_cast<int>(proto_header.kind()),
                                                   " is not accepted in uploads, expected PRUNE_MASK (1)"));
    }
    ASSIGN_OR_RETURN(PayloadHeader header, HeaderFromProto(proto_header, *ticket_->table));
    for (const PayloadTensor& t : header.tensors) {
      if (ticket_->tensors->count(t.name) == 0) {
        return absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "' is not part of round ", ticket_->round));
      }
      if (!received_.insert(t.name).second) {
        return absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "' sent twice in one upload"));
      }
    }
    MaskExpectations expect;
    expect.shapes = *ticket_->tensors;
    expect.pattern = ticket_->pattern;
    expect.max_chunk_bytes = ticket_->max_chunk_bytes;
    ASSIGN_OR_RETURN(MaskAssembler assembler, MaskAssembler::Create(std::move(header), expect));
    // The job's declared counts, before any chunk is read (docs/robustness.md §1).
    RETURN_IF_ERROR(ticket_->plausibility->CheckHeader(assembler.header()));
    current_.emplace(std::move(assembler));
    return absl::OkStatus();
  }

  // A refusal of the payload's content, prefixed with the site it came from, so the site's
  // operator reads whose masks broke which rule ("site-c: tensor '...': row 3 prunes ...").
  absl::Status ForSite(absl::Status status) const {
    if (status.ok()) return status;
    return absl::Status(status.code(), absl::StrCat(ticket_->client, ": ", status.message()));
  }

  absl::Status FinishPayload() {
    ASSIGN_OR_RETURN(std::vector<PackedMask> rest, current_->Finish());
    RETURN_IF_ERROR(Spool(std::move(rest)));
    current_.reset();
    spooled_in_payload_ = 0;
    return absl::OkStatus();
  }

  // Appends the current payload's next decoded masks (header order) to the spool.
  absl::Status Spool(std::vector<PackedMask> masks) {
    const std::vector<PayloadTensor>& tensors = current_->header().tensors;
    for (PackedMask& mask : masks) {
      const PayloadTensor& t = tensors[spooled_in_payload_++];
      // The job's per-row rule, on each tensor as soon as it is decoded: memory holds this
      // one mask, and a refused upload has spooled nothing that counts.
      RETURN_IF_ERROR(ticket_->plausibility->CheckMask(t.name, mask));
      RETURN_IF_ERROR(spool_->Add(t.name, mask));
      stats_.weights += mask.numel();
      ++stats_.tensors;
    }
    return absl::OkStatus();
  }

  // A keepalive between payloads: counted against the stream's allowance only.
  absl::Status Keepalive() {
    if (current_.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat(current_->header().Label(),
                                                     "keepalive arrived before this payload's last chunk"));
    }
    const double age = std::chrono::duration<double>(Clock::now() - start_).count();
    if (++keepalives_ > static_cast<int64_t>(age) + 10) {
      return absl::ResourceExhaustedError(absl::StrCat("upload stream sent ", keepalives_, " keepalives in ",
                                                       static_cast<int64_t>(age),
                                                       " s, more than one per second plus 10"));
    }
    return absl::OkStatus();
  }

  void EndOfStream() {
    if (!ClaimFinish()) return;
    if (!ticket_.has_value()) {
      RefuseClaimed(absl::InvalidArgumentError("empty upload stream"));
      return;
    }
    stats_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    if (!ticket_->duplicate) {
      if (current_.has_value()) {
        if (absl::Status s = current_->Finish().status(); !s.ok()) {  // reports the truncation
          RefuseClaimed(s);
          return;
        }
      }
      if (received_.size() != ticket_->tensors->size()) {
        std::string missing;
        int count = 0;
        for (const auto& [name, shape] : *ticket_->tensors) {
          if (received_.count(name) == 0 && count++ < 3) absl::StrAppend(&missing, count > 1 ? ", " : "", name);
        }
        RefuseClaimed(absl::InvalidArgumentError(absl::StrCat("upload for round ", ticket_->round, " is missing ",
                                                       ticket_->tensors->size() - received_.size(), " of ",
                                                       ticket_->tensors->size(), " tensors (", missing,
                                                       count > 3 ? ", ..." : "", ")")));
        return;
      }
    }
    handed_off_ = true;
    UploadStats stats = stats_;
    job_->CommitUpload(*ticket_, std::move(spool_), stats, [this](absl::StatusOr<v1::UploadAck> result) {
      if (result.ok()) {
        *ack_ = *result;
        if (ack_->duplicate()) {
          spdlog::info("round {}: duplicate upload from {} acknowledged and ignored", ticket_->round, ticket_->client);
        }
      }
      Finish(ToGrpcStatus(result.status()));
    });
  }

  void Refuse(const absl::Status& status) {
    if (ClaimFinish()) RefuseClaimed(status);
  }

  // Logs, deletes the spool, releases the ticket and finishes with `status`. Only after
  // ClaimFinish() returned true.
  void RefuseClaimed(const absl::Status& status) {
    spdlog::warn("upload from {} for round {} refused ({} messages, {} bytes dropped, no vote changed): {}: {}",
                 ticket_.has_value() ? ticket_->client : (peer_.empty() ? "unauthenticated peer" : peer_),
                 ticket_.has_value() ? ticket_->round : message_.round(), messages_, stats_.wire_bytes,
                 absl::StatusCodeToString(status.code()), std::string(status.message()));
    current_.reset();
    spool_.reset();  // before the ticket is released: a retry may start its own spool at once
    if (ticket_.has_value()) {
      job_->AbortUpload(*ticket_);
      handed_off_ = true;  // released already
    }
    Finish(ToGrpcStatus(status));
  }

  const std::shared_ptr<FederationJob> job_;
  const std::string peer_;
  v1::UploadAck* const ack_;
  const std::chrono::seconds idle_timeout_;
  const Clock::time_point start_;
  // Stream state: touched by one callback at a time (gRPC's reads, or the alarm that
  // claimed the finish while a read was pending).
  v1::UploadChunk message_;
  std::optional<UploadTicket> ticket_;
  std::string token_;
  std::optional<MaskAssembler> current_;
  std::unique_ptr<MaskSetWriter> spool_;  // null for a duplicate
  std::set<std::string> received_;         // tensors whose payload header was accepted
  size_t spooled_in_payload_ = 0;          // masks of current_ already in the spool
  UploadStats stats_;
  int64_t messages_ = 0;      // received on this stream, the first included; keepalives not
  int64_t keepalives_ = 0;
  int64_t max_messages_ = 0;  // MaxUploadMessages of the ticket's round
  bool handed_off_ = false;

  // Shared between the read callbacks, OnDone and the idle alarm.
  absl::Mutex mu_;
  Clock::time_point waiting_since_ ABSL_GUARDED_BY(mu_);  // when the pending read started
  bool read_pending_ ABSL_GUARDED_BY(mu_) = false;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;  // Finish claimed (ClaimFinish)
  bool done_ ABSL_GUARDED_BY(mu_) = false;     // OnDone ran
  std::unique_ptr<grpc::Alarm> alarm_ ABSL_GUARDED_BY(mu_);
  int alarms_pending_ ABSL_GUARDED_BY(mu_) = 0;  // alarm callbacks not yet run, plus OnDone's pin
};

// WaitForRound: a long poll held by the job. When the client goes away while it is held
// (killed, network broken), OnCancel tells the job, which answers it and notes the site as
// disconnected. The job calls the callback exactly once, and the reactor lives until OnDone,
// which gRPC calls only after Finish.
class WaitReactor final : public grpc::ServerUnaryReactor {
 public:
  WaitReactor(std::shared_ptr<FederationJob> job, const absl::StatusOr<std::string>& peer,
              const v1::WaitRequest& request, v1::RoundAssignment* response)
      : job_(std::move(job)) {
    if (!peer.ok()) {
      Finish(ToGrpcStatus(peer.status()));
      return;
    }
    if (job_ == nullptr) {
      Finish(ToGrpcStatus(NoRunningJob()));
      return;
    }
    id_ = job_->WaitForRound(request, *peer, [this, response](absl::StatusOr<v1::RoundAssignment> result) {
      if (result.ok()) *response = *std::move(result);
      Finish(ToGrpcStatus(result.status()));
    });
  }
  void OnCancel() override {
    if (id_ != 0) job_->CancelWait(id_);
  }
  void OnDone() override { delete this; }

 private:
  const std::shared_ptr<FederationJob> job_;
  std::atomic<uint64_t> id_{0};
};

// WaitForJob: a long poll held by the JobQueue, cancelled like WaitReactor's.
class JobWaitReactor final : public grpc::ServerUnaryReactor {
 public:
  JobWaitReactor(JobQueue* jobs, const absl::StatusOr<std::string>& peer, const v1::JobWaitRequest& request,
                 v1::JobOffer* response)
      : jobs_(jobs) {
    if (!peer.ok()) {
      Finish(ToGrpcStatus(peer.status()));
      return;
    }
    id_ = jobs_->WaitForJob(*peer, request, [this, response](absl::StatusOr<v1::JobOffer> result) {
      if (result.ok()) *response = *std::move(result);
      Finish(ToGrpcStatus(result.status()));
    });
  }
  void OnCancel() override {
    if (id_ != 0) jobs_->CancelJobWait(id_);
  }
  void OnDone() override { delete this; }

 private:
  JobQueue* const jobs_;
  std::atomic<uint64_t> id_{0};
};

// FetchDecisions: writes a closed round's pre-encoded decision stream, one message in flight.
class FetchReactor final : public grpc::ServerWriteReactor<v1::DecisionChunk> {
 public:
  explicit FetchReactor(absl::StatusOr<std::shared_ptr<const std::vector<v1::DecisionChunk>>> stream) {
    if (!stream.ok()) {
      Finish(ToGrpcStatus(stream.status()));
      return;
    }
    stream_ = *std::move(stream);
    WriteNext();
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "client went away during FetchDecisions"));
      return;
    }
    WriteNext();
  }
  void OnDone() override { delete this; }

 private:
  void WriteNext() {
    if (next_ == stream_->size()) {
      Finish(grpc::Status::OK);
      return;
    }
    StartWrite(&(*stream_)[next_++]);
  }
  std::shared_ptr<const std::vector<v1::DecisionChunk>> stream_;
  size_t next_ = 0;
};

std::string PeerAddress(grpc::CallbackServerContext* context) { return context->peer(); }

grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* context, const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

}  // namespace

absl::StatusOr<std::string> FedPrLLMService::PeerIdentity(grpc::CallbackServerContext* context, const std::string& rpc,
                                                          const std::string* claimed_name) const {
  if (insecure_) {
    if (claimed_name == nullptr) return std::string();
    if (!policy_->IsSite(*claimed_name)) {
      spdlog::warn("{} from {} refused: client name \"{}\" is not in allowed_clients (insecure mode)", rpc,
                   PeerAddress(context), *claimed_name);
      return absl::PermissionDeniedError(
          absl::StrCat("client name \"", *claimed_name, "\" is not in this job's allowed_clients"));
    }
    return *claimed_name;
  }
  const std::shared_ptr<const grpc::AuthContext> auth = context->auth_context();
  const std::vector<std::string> names = auth ? PeerCertificateNames(*auth) : std::vector<std::string>{};
  if (std::optional<std::string> identity = policy_->Site(names)) {
    const std::vector<grpc::string_ref> pem = auth->FindPropertyValues("x509_pem_cert");
    jobs_->NoteSeen(*identity, pem.empty() ? std::string() : std::string(pem.front().data(), pem.front().size()));
    return *identity;
  }
  spdlog::warn("{} from {} refused: {} not in allowed_clients", rpc, PeerAddress(context), DescribeNames(names));
  return absl::PermissionDeniedError(absl::StrCat("client certificate identity (", DescribeNames(names),
                                                  ") is not in this job's allowed_clients"));
}

grpc::ServerUnaryReactor* FedPrLLMService::Join(grpc::CallbackServerContext* context, const v1::JoinRequest* request,
                                                v1::JoinResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<std::string> identity = PeerIdentity(context, "Join", &request->client_name());
  absl::Status status = identity.status();
  if (identity.ok()) {
    absl::StatusOr<std::shared_ptr<FederationJob>> job = jobs_->JobToJoin(request->job_id());
    absl::StatusOr<v1::JoinResponse> joined = job.ok() ? (*job)->Join(*identity, *request)
                                                       : absl::StatusOr<v1::JoinResponse>(job.status());
    if (joined.ok()) {
      *response = *std::move(joined);
    } else {
      status = joined.status();
      spdlog::warn("client {} rejected at Join: {}", *identity, std::string(status.message()));
    }
  }
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

grpc::ServerUnaryReactor* FedPrLLMService::WaitForRound(grpc::CallbackServerContext* context,
                                                        const v1::WaitRequest* request, v1::RoundAssignment* response) {
  absl::StatusOr<std::string> peer = PeerIdentity(context, "WaitForRound");
  return new WaitReactor(jobs_->Running(), peer, *request, response);
}

grpc::ServerUnaryReactor* FedPrLLMService::WaitForJob(grpc::CallbackServerContext* context,
                                                      const v1::JobWaitRequest* request, v1::JobOffer* response) {
  absl::StatusOr<std::string> peer = PeerIdentity(context, "WaitForJob", &request->client_name());
  return new JobWaitReactor(jobs_, peer, *request, response);
}

grpc::ServerUnaryReactor* FedPrLLMService::DeclineJob(grpc::CallbackServerContext* context,
                                                      const v1::DeclineJobRequest* request,
                                                      v1::DeclineJobResponse* /*response*/) {
  absl::StatusOr<std::string> peer = PeerIdentity(context, "DeclineJob");
  if (!peer.ok()) return Answer(context, peer.status());
  if (peer->empty()) return Answer(context, absl::FailedPreconditionError("DeclineJob needs TLS identities"));
  return Answer(context, jobs_->Decline(*peer, request->job_id(), request->reason()));
}

grpc::ServerUnaryReactor* FedPrLLMService::WhoAmI(grpc::CallbackServerContext* context,
                                                  const v1::WhoAmIRequest* /*request*/, v1::WhoAmIResponse* response) {
  absl::StatusOr<std::string> peer = PeerIdentity(context, "WhoAmI");
  if (peer.ok()) {
    response->set_identity(*peer);
    response->set_role("site");
    response->set_server_version(kBuildVersion);
  }
  return Answer(context, peer.status());
}

grpc::ServerUnaryReactor* FedPrLLMService::Heartbeat(grpc::CallbackServerContext* context,
                                                     const v1::HeartbeatRequest* request,
                                                     v1::HeartbeatResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<std::string> peer = PeerIdentity(context, "Heartbeat");
  absl::Status status = peer.status();
  if (peer.ok()) {
    std::shared_ptr<FederationJob> job = jobs_->Running();
    absl::StatusOr<v1::HeartbeatResponse> answer =
        job != nullptr ? job->Heartbeat(*request, *peer) : absl::StatusOr<v1::HeartbeatResponse>(NoRunningJob());
    if (answer.ok()) *response = *std::move(answer);
    status = answer.status();
  }
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

grpc::ServerUnaryReactor* FedPrLLMService::SecureAggregate(grpc::CallbackServerContext* context,
                                                           const v1::SecAggRequest* request,
                                                           v1::SecAggResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<std::string> peer = PeerIdentity(context, "SecureAggregate");
  absl::Status status = peer.status();
  if (peer.ok()) {
    std::shared_ptr<FederationJob> job = jobs_->Running();
    absl::StatusOr<v1::SecAggResponse> answer =
        job != nullptr ? job->SecureAggregate(*request, *peer) : absl::StatusOr<v1::SecAggResponse>(NoRunningJob());
    if (answer.ok()) *response = *std::move(answer);
    status = answer.status();
  }
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

grpc::ServerUnaryReactor* FedPrLLMService::UploadStatistics(grpc::CallbackServerContext* context,
                                                            const v1::StatisticsUpload* request,
                                                            v1::UploadAck* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<std::string> peer = PeerIdentity(context, "UploadStatistics");
  if (!peer.ok()) {
    reactor->Finish(ToGrpcStatus(peer.status()));
    return reactor;
  }
  std::shared_ptr<FederationJob> job = jobs_->Running();
  if (job == nullptr) {
    reactor->Finish(ToGrpcStatus(NoRunningJob()));
    return reactor;
  }
  // The job answers once the commit is durable, on its committer thread; `response` and
  // `reactor` stay valid until Finish.
  job->CommitStatistics(request->session_token(), *peer, *request,
                        [reactor, response](absl::StatusOr<v1::UploadAck> ack) {
                          if (ack.ok()) *response = *std::move(ack);
                          reactor->Finish(ToGrpcStatus(ack.status()));
                        });
  return reactor;
}

grpc::ServerReadReactor<v1::UploadChunk>* FedPrLLMService::UploadPayloads(grpc::CallbackServerContext* context,
                                                                          v1::UploadAck* response) {
  absl::StatusOr<std::string> peer = PeerIdentity(context, "UploadPayloads");
  if (!peer.ok()) {
    class Refused final : public grpc::ServerReadReactor<v1::UploadChunk> {
     public:
      explicit Refused(const absl::Status& s) { Finish(ToGrpcStatus(s)); }
      void OnDone() override { delete this; }
    };
    return new Refused(peer.status());
  }
  std::shared_ptr<FederationJob> job = jobs_->Running();
  if (job == nullptr) {
    class Refused final : public grpc::ServerReadReactor<v1::UploadChunk> {
     public:
      Refused() { Finish(ToGrpcStatus(NoRunningJob())); }
      void OnDone() override { delete this; }
    };
    return new Refused();
  }
  return new UploadReactor(std::move(job), *peer, response, std::chrono::seconds(upload_idle_timeout_seconds_));
}

grpc::ServerWriteReactor<v1::DecisionChunk>* FedPrLLMService::FetchDecisions(grpc::CallbackServerContext* context,
                                                                             const v1::FetchRequest* request) {
  absl::StatusOr<std::string> peer = PeerIdentity(context, "FetchDecisions");
  if (!peer.ok()) return new FetchReactor(peer.status());
  std::shared_ptr<FederationJob> job = jobs_->Running();
  if (job == nullptr) return new FetchReactor(NoRunningJob());
  return new FetchReactor(job->Decisions(request->session_token(), *peer, request->round()));
}

}  // namespace fedprllm
