// The operator's gRPC edge: the FedPrLLMAdmin service (docs/admin_api.md) over the JobQueue.
// Only identities on the server's `admins:` list may call it (AllowlistAdmission refuses the
// others at the headers; this service checks again). Synchronous handlers: every call is
// short except StreamJobLog's follow, which polls the job's log file.
#pragma once

#include <memory>
#include <string>

#include "proto/fedprllm.grpc.pb.h"
#include "server/access_policy.h"
#include "server/job_queue.h"

namespace fedprllm {

class AdminService final : public v1::FedPrLLMAdmin::Service {
 public:
  // `jobs` outlives the service. `insecure`: no TLS; every caller is an operator.
  AdminService(JobQueue* jobs, std::shared_ptr<const AccessPolicy> policy, bool insecure)
      : jobs_(jobs), policy_(std::move(policy)), insecure_(insecure) {}

  grpc::Status SubmitJob(grpc::ServerContext* context, const v1::SubmitJobRequest* request,
                         v1::SubmitJobResponse* response) override;
  grpc::Status ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override;
  grpc::Status GetJobStatus(grpc::ServerContext* context, const v1::JobStatusRequest* request,
                            v1::JobStatusResponse* response) override;
  grpc::Status AbortJob(grpc::ServerContext* context, const v1::AbortJobRequest* request,
                        v1::AbortJobResponse* response) override;
  grpc::Status ListSites(grpc::ServerContext* context, const v1::ListSitesRequest* request,
                         v1::ListSitesResponse* response) override;
  grpc::Status StreamJobLog(grpc::ServerContext* context, const v1::JobLogRequest* request,
                            grpc::ServerWriter<v1::JobLogLines>* writer) override;

 private:
  // The caller's identity if it is an operator, or, for a `read_only` RPC, a monitor
  // ("operator" when insecure); PERMISSION_DENIED otherwise.
  absl::StatusOr<std::string> Caller(grpc::ServerContext* context, const char* rpc, bool read_only) const;

  JobQueue* const jobs_;
  const std::shared_ptr<const AccessPolicy> policy_;
  const bool insecure_;
};

}  // namespace fedprllm
