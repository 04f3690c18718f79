// grpc.health.v1.Health/Check over a caller's channel, with the answer as the enum's name.
#include "proto/health_client.h"

#include <grpcpp/client_context.h>

#include <chrono>
#include <cmath>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "proto/health.grpc.pb.h"
#include "proto/health.pb.h"

namespace fedprllm {

absl::StatusOr<std::string> CheckHealth(std::shared_ptr<grpc::Channel> channel, const std::string& service,
                                        double timeout_seconds) {
  if (!(timeout_seconds > 0) || !std::isfinite(timeout_seconds)) {
    return absl::InvalidArgumentError(
        absl::StrCat("health check of service '", service, "': timeout must be positive seconds, got ", timeout_seconds));
  }
  if (channel == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("health check of service '", service, "': no channel"));
  }
  auto stub = grpc::health::v1::Health::NewStub(std::move(channel));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::duration_cast<std::chrono::system_clock::duration>(
                           std::chrono::duration<double>(timeout_seconds)));
  // Without this a server that is not up yet fails at once (UNAVAILABLE) instead of being
  // waited for within the timeout.
  context.set_wait_for_ready(true);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status rpc = stub->Check(&context, request, &response);
  if (!rpc.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(rpc.error_code()),
                        absl::StrCat("health check of service '", service, "': ", rpc.error_message()));
  }
  const std::string& name = grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status());
  if (name.empty()) {  // a value newer than this proto
    return absl::StrCat("UNKNOWN(", static_cast<int>(response.status()), ")");
  }
  return name;
}

}  // namespace fedprllm
