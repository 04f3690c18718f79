// The gRPC callback service: maps each rpc onto FederationJob, and streams uploads through
// the payload validators before anything reaches the job.
#include "server/fedprllm_service.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "proto/payload_convert.h"
#include "server/peer_identity.h"

namespace fedprllm {
namespace {

// UploadPayloads: validates each message as it arrives (token and round fixed by the first
// message; every header and chunk through MaskAssembler), keeps the decoded masks of this
// stream only, and hands the complete upload to the job's committer at end of stream. Any
// error finishes the call at once and drops everything this stream carried.
class UploadReactor final : public grpc::ServerReadReactor<v1::UploadChunk> {
 public:
  UploadReactor(FederationJob* job, std::string peer, v1::UploadAck* ack)
      : job_(job), peer_(std::move(peer)), ack_(ack), start_(std::chrono::steady_clock::now()) {
    StartRead(&message_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      EndOfStream();
      return;
    }
    if (absl::Status s = Consume(); !s.ok()) {
      Refuse(s);
      return;
    }
    message_.Clear();
    StartRead(&message_);
  }

  void OnDone() override {
    if (ticket_.has_value() && !handed_off_) job_->AbortUpload(*ticket_);
    delete this;
  }

 private:
  absl::Status Consume() {
    stats_.wire_bytes += GrpcMessageBytes(message_);
    if (!ticket_.has_value()) {
      ASSIGN_OR_RETURN(UploadTicket ticket, job_->BeginUpload(message_.session_token(), peer_, message_.round()));
      ticket_ = std::move(ticket);
      token_ = message_.session_token();
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
        return StartPayload(message_.header());
      case v1::UploadChunk::kChunk: {
        if (!current_.has_value()) {
          return absl::InvalidArgumentError(
              absl::StrCat("chunk ", message_.chunk().chunk_index(), " arrived before any payload header"));
        }
        const int64_t size = static_cast<int64_t>(message_.chunk().data().size());
        RETURN_IF_ERROR(current_->AddChunk(ChunkFromProto(message_.mutable_chunk())));
        stats_.payload_bytes += size;
        if (current_->complete()) return FinishPayload();
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
      if (masks_.count(t.name) != 0) {
        return absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "' sent twice in one upload"));
      }
    }
    MaskExpectations expect;
    expect.shapes = *ticket_->tensors;
    expect.pattern = ticket_->pattern;
    expect.max_chunk_bytes = ticket_->max_chunk_bytes;
    ASSIGN_OR_RETURN(MaskAssembler assembler, MaskAssembler::Create(std::move(header), expect));
    current_.emplace(std::move(assembler));
    return absl::OkStatus();
  }

  absl::Status FinishPayload() {
    const std::vector<PayloadTensor> tensors = current_->header().tensors;
    ASSIGN_OR_RETURN(std::vector<PackedMask> masks, current_->Finish());
    current_.reset();
    for (size_t i = 0; i < tensors.size(); ++i) {
      stats_.weights += masks[i].numel();
      ++stats_.tensors;
      masks_.emplace(tensors[i].name, std::move(masks[i]));
    }
    return absl::OkStatus();
  }

  void EndOfStream() {
    if (!ticket_.has_value()) {
      Refuse(absl::InvalidArgumentError("empty upload stream"));
      return;
    }
    stats_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    if (!ticket_->duplicate) {
      if (current_.has_value()) {
        if (absl::Status s = current_->Finish().status(); !s.ok()) {  // reports the truncation
          Refuse(s);
          return;
        }
      }
      if (masks_.size() != ticket_->tensors->size()) {
        std::string missing;
        int count = 0;
        for (const auto& [name, shape] : *ticket_->tensors) {
          if (masks_.count(name) == 0 && count++ < 3) absl::StrAppend(&missing, count > 1 ? ", " : "", name);
        }
        Refuse(absl::InvalidArgumentError(absl::StrCat("upload for round ", ticket_->round, " is missing ",
                                                       ticket_->tensors->size() - masks_.size(), " of ",
                                                       ticket_->tensors->size(), " tensors (", missing,
                                                       count > 3 ? ", ..." : "", ")")));
        return;
      }
    }
    handed_off_ = true;
    UploadStats stats = stats_;
    job_->CommitUpload(*ticket_, std::move(masks_), stats, [this](absl::StatusOr<v1::UploadAck> result) {
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
    spdlog::warn("upload from {} for round {} refused ({} messages' worth of {} bytes dropped, no vote changed): {}: {}",
                 ticket_.has_value() ? ticket_->client : (peer_.empty() ? "unauthenticated peer" : peer_),
                 ticket_.has_value() ? ticket_->round : message_.round(), stats_.tensors, stats_.wire_bytes,
                 absl::StatusCodeToString(status.code()), std::string(status.message()));
    if (ticket_.has_value()) {
      job_->AbortUpload(*ticket_);
      handed_off_ = true;  // released already
    }
    masks_.clear();
    current_.reset();
    Finish(ToGrpcStatus(status));
  }

  FederationJob* const job_;
  const std::string peer_;
  v1::UploadAck* const ack_;
  const std::chrono::steady_clock::time_point start_;
  v1::UploadChunk message_;
  std::optional<UploadTicket> ticket_;
  std::string token_;
  std::optional<MaskAssembler> current_;
  std::map<std::string, PackedMask> masks_;
  UploadStats stats_;
  bool handed_off_ = false;
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

}  // namespace

absl::StatusOr<std::string> FedPrLLMService::PeerIdentity(grpc::CallbackServerContext* context, const std::string& rpc,
                                                          const std::string* claimed_name) const {
  if (insecure_) {
    if (claimed_name == nullptr) return std::string();
    if (job_->allowlist().count(*claimed_name) == 0) {
      spdlog::warn("{} from {} refused: client name \"{}\" is not in allowed_clients (insecure mode)", rpc,
                   PeerAddress(context), *claimed_name);
      return absl::PermissionDeniedError(
          absl::StrCat("client name \"", *claimed_name, "\" is not in this job's allowed_clients"));
    }
    return *claimed_name;
  }
  const std::shared_ptr<const grpc::AuthContext> auth = context->auth_context();
  const std::vector<std::string> names = auth ? PeerCertificateNames(*auth) : std::vector<std::string>{};
  if (std::optional<std::string> identity = MatchAllowlist(names, job_->allowlist())) return *identity;
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
    absl::StatusOr<v1::JoinResponse> joined = job_->Join(*identity, *request);
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
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<std::string> peer = PeerIdentity(context, "WaitForRound");
  if (!peer.ok()) {
    reactor->Finish(ToGrpcStatus(peer.status()));
    return reactor;
  }
  job_->WaitForRound(*request, *peer, [reactor, response](absl::StatusOr<v1::RoundAssignment> result) {
    if (result.ok()) *response = *std::move(result);
    reactor->Finish(ToGrpcStatus(result.status()));
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
  return new UploadReactor(job_, *peer, response);
}

grpc::ServerWriteReactor<v1::DecisionChunk>* FedPrLLMService::FetchDecisions(grpc::CallbackServerContext* context,
                                                                             const v1::FetchRequest* request) {
  absl::StatusOr<std::string> peer = PeerIdentity(context, "FetchDecisions");
  if (!peer.ok()) return new FetchReactor(peer.status());
  return new FetchReactor(job_->Decisions(request->session_token(), *peer, request->round()));
}

}  // namespace fedprllm
