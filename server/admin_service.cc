// The admin API's handlers: each checks the caller's role (an operator; a monitor for the
// read-only RPCs), then asks the JobQueue.
#include "server/admin_service.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "proto/payload_convert.h"
#include "server/job_log.h"
#include "server/peer_identity.h"

namespace fedprllm {

absl::StatusOr<std::string> AdminService::Caller(grpc::ServerContext* context, const char* rpc,
                                                 bool read_only) const {
  if (insecure_) return std::string("operator");
  const std::shared_ptr<const grpc::AuthContext> auth = context->auth_context();
  const std::vector<std::string> names = auth ? PeerCertificateNames(*auth) : std::vector<std::string>{};
  if (std::optional<std::string> identity = policy_->Admin(names)) return *identity;
  if (read_only) {
    if (std::optional<std::string> identity = policy_->Monitor(names)) return *identity;
  }
  const char* lists = read_only ? "admins or monitors" : "admins";
  spdlog::warn("admin {} from {} refused: {} not in {}", rpc, context->peer(), DescribeNames(names), lists);
  return absl::PermissionDeniedError(
      absl::StrCat("certificate identity (", DescribeNames(names), ") is not in the server's ", lists));
}

grpc::Status AdminService::SubmitJob(grpc::ServerContext* context, const v1::SubmitJobRequest* request,
                                     v1::SubmitJobResponse* response) {
  absl::StatusOr<std::string> by = Caller(context, "SubmitJob", /*read_only=*/false);
  if (!by.ok()) return ToGrpcStatus(by.status());
  const std::string source = request->source().empty() ? "submitted job" : request->source().substr(0, 256);
  absl::StatusOr<std::pair<v1::JobSummary, int>> submitted = jobs_->Submit(request->job_yaml(), source);
  if (!submitted.ok()) {
    spdlog::warn("job submitted by {} refused: {}", *by, std::string(submitted.status().message()));
    return ToGrpcStatus(submitted.status());
  }
  *response->mutable_job() = submitted->first;
  response->set_queue_position(submitted->second);
  return grpc::Status::OK;
}

grpc::Status AdminService::ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest* /*request*/,
                                    v1::ListJobsResponse* response) {
  if (absl::StatusOr<std::string> by = Caller(context, "ListJobs", /*read_only=*/true); !by.ok()) return ToGrpcStatus(by.status());
  for (v1::JobSummary& job : jobs_->List()) *response->add_jobs() = std::move(job);
  return grpc::Status::OK;
}

grpc::Status AdminService::GetJobStatus(grpc::ServerContext* context, const v1::JobStatusRequest* request,
                                        v1::JobStatusResponse* response) {
  if (absl::StatusOr<std::string> by = Caller(context, "GetJobStatus", /*read_only=*/true); !by.ok()) return ToGrpcStatus(by.status());
  absl::StatusOr<std::pair<v1::JobSummary, nlohmann::json>> status = jobs_->Status(request->name());
  if (!status.ok()) return ToGrpcStatus(status.status());
  *response->mutable_job() = status->first;
  response->set_detail_json(status->second.dump());
  return grpc::Status::OK;
}

grpc::Status AdminService::AbortJob(grpc::ServerContext* context, const v1::AbortJobRequest* request,
                                    v1::AbortJobResponse* response) {
  absl::StatusOr<std::string> by = Caller(context, "AbortJob", /*read_only=*/false);
  if (!by.ok()) return ToGrpcStatus(by.status());
  absl::StatusOr<v1::JobSummary> job = jobs_->Abort(request->name(), request->reason().substr(0, 1000), *by);
  if (!job.ok()) return ToGrpcStatus(job.status());
  *response->mutable_job() = *std::move(job);
  return grpc::Status::OK;
}

grpc::Status AdminService::ListSites(grpc::ServerContext* context, const v1::ListSitesRequest* /*request*/,
                                     v1::ListSitesResponse* response) {
  if (absl::StatusOr<std::string> by = Caller(context, "ListSites", /*read_only=*/true); !by.ok()) return ToGrpcStatus(by.status());
  for (v1::SiteSummary& site : jobs_->Sites()) *response->add_sites() = std::move(site);
  return grpc::Status::OK;
}

grpc::Status AdminService::StreamJobLog(grpc::ServerContext* context, const v1::JobLogRequest* request,
                                        grpc::ServerWriter<v1::JobLogLines>* writer) {
  if (absl::StatusOr<std::string> by = Caller(context, "StreamJobLog", /*read_only=*/true); !by.ok()) return ToGrpcStatus(by.status());
  LogPosition next;
  next.line = std::max<int64_t>(0, request->from_line());
  while (!context->IsCancelled()) {
    absl::StatusOr<std::pair<std::string, bool>> log = jobs_->LogOf(request->name());
    if (!log.ok()) return ToGrpcStatus(log.status());
    const bool ended = log->second;  // read before the lines: an ended job's log is complete
    const int64_t first_line = next.line;
    absl::StatusOr<std::vector<std::string>> lines = ReadLogLines(log->first, &next, 1000);
    if (!lines.ok()) {
      if (!request->follow() || ended) return ToGrpcStatus(absl::NotFoundError(absl::StrCat(
                                           "job ", request->name(), " has no log yet (it has not started)")));
      lines = std::vector<std::string>();
    }
    if (!lines->empty()) {
      v1::JobLogLines message;
      message.set_first_line(first_line);
      for (std::string& line : *lines) message.add_lines(std::move(line));
      if (!writer->Write(message)) return grpc::Status(grpc::StatusCode::CANCELLED, "the reader went away");
      continue;
    }
    if (!request->follow() || ended) return grpc::Status::OK;
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  return grpc::Status(grpc::StatusCode::CANCELLED, "the reader went away");
}

}  // namespace fedprllm
