// The gRPC edge of the server for sites: the FedPrLLM callback service. Each streaming RPC
// is a small reactor that owns its call's state, keeps at most one read or write in
// flight, and never blocks or holds a lock in a callback. It authenticates the peer (mTLS
// certificate names against allowed_clients), routes each call to the running job of the
// JobQueue (a reactor keeps that job alive until it is done), validates every payload
// chunk with MaskAssembler before anything reaches the job, and converts absl::Status to
// grpc::Status 1:1.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "proto/fedprllm.grpc.pb.h"
#include "server/access_policy.h"
#include "server/federation_job.h"
#include "server/job_queue.h"

namespace fedprllm {

class FedPrLLMService final : public v1::FedPrLLM::CallbackService {
 public:
  // `jobs` is not owned and outlives the service. `policy` gives the sites (allowed_clients).
  // `insecure`: no TLS; identities are the JoinRequest/JobWaitRequest client_name (still
  // checked against the sites).
  FedPrLLMService(JobQueue* jobs, std::shared_ptr<const AccessPolicy> policy, bool insecure)
      : jobs_(jobs), policy_(std::move(policy)), insecure_(insecure) {}

  // Upload stream bounds (docs/round_protocol.md §9): a stream that carries no message for
  // `upload_idle_timeout_seconds` is finished with DEADLINE_EXCEEDED. Call before the server
  // starts. Default 60 s.
  void SetUploadIdleTimeout(int seconds) { upload_idle_timeout_seconds_ = seconds; }

  grpc::ServerUnaryReactor* WaitForJob(grpc::CallbackServerContext* context, const v1::JobWaitRequest* request,
                                       v1::JobOffer* response) override;
  grpc::ServerUnaryReactor* DeclineJob(grpc::CallbackServerContext* context, const v1::DeclineJobRequest* request,
                                       v1::DeclineJobResponse* response) override;
  grpc::ServerUnaryReactor* WhoAmI(grpc::CallbackServerContext* context, const v1::WhoAmIRequest* request,
                                   v1::WhoAmIResponse* response) override;
  grpc::ServerUnaryReactor* Join(grpc::CallbackServerContext* context, const v1::JoinRequest* request,
                                 v1::JoinResponse* response) override;
  grpc::ServerUnaryReactor* WaitForRound(grpc::CallbackServerContext* context, const v1::WaitRequest* request,
                                         v1::RoundAssignment* response) override;
  grpc::ServerReadReactor<v1::UploadChunk>* UploadPayloads(grpc::CallbackServerContext* context,
                                                           v1::UploadAck* response) override;
  grpc::ServerWriteReactor<v1::DecisionChunk>* FetchDecisions(grpc::CallbackServerContext* context,
                                                              const v1::FetchRequest* request) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* context, const v1::HeartbeatRequest* request,
                                      v1::HeartbeatResponse* response) override;
  grpc::ServerUnaryReactor* SecureAggregate(grpc::CallbackServerContext* context, const v1::SecAggRequest* request,
                                            v1::SecAggResponse* response) override;
  grpc::ServerUnaryReactor* UploadStatistics(grpc::CallbackServerContext* context, const v1::StatisticsUpload* request,
                                             v1::UploadAck* response) override;

 private:
  // The peer's allowlisted identity; PERMISSION_DENIED (logged) otherwise. In insecure mode
  // returns "" for every call but those that carry a client name (`claimed_name`).
  absl::StatusOr<std::string> PeerIdentity(grpc::CallbackServerContext* context, const std::string& rpc,
                                           const std::string* claimed_name = nullptr) const;

  JobQueue* const jobs_;
  const std::shared_ptr<const AccessPolicy> policy_;
  const bool insecure_;
  int upload_idle_timeout_seconds_ = 60;
};

}  // namespace fedprllm
