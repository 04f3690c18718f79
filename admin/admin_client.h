// AdminClient: the operator's connection to fedprllm-server's FedPrLLMAdmin service (and its
// grpc.health.v1 service), with each RPC's failure turned into an absl::Status an operator
// can act on: UNAVAILABLE names the address (and, over TLS, what a TLS probe of the server
// found), PERMISSION_DENIED carries a hint about the server's `admins:` list.
//
//   ASSIGN_OR_RETURN(auto client, AdminClient::Connect(config, absl::Seconds(10)));
//   ASSIGN_OR_RETURN(v1::ListJobsResponse jobs, client->ListJobs());
#pragma once

#include <grpcpp/channel.h>
#include <grpcpp/support/status.h>

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "admin/admin_config.h"
#include "proto/fedprllm.grpc.pb.h"
#include "proto/fedprllm.pb.h"

namespace fedprllm {

// Status payload key of an error's hint for the operator (text); AdminErrorText prints it.
inline constexpr char kAdminHintPayload[] = "type.fedprllm.dev/admin-hint";

// The hint attached to a PERMISSION_DENIED from the server.
inline constexpr char kAdminsListHint[] = "this certificate's identity must be on the server's admins: list";

class AdminClient {
 public:
  // Builds the channel `config` describes: mutual TLS with tls.cert/tls.key (read and
  // checked here, so a bad file is named before any RPC) and tls.ca, the server name
  // overridden by server_name when set; plaintext when `insecure`. Connects lazily.
  // `rpc_timeout` (> 0) bounds each call (not StreamJobLog with follow).
  static absl::StatusOr<std::unique_ptr<AdminClient>> Connect(const AdminConfig& config, absl::Duration rpc_timeout);

  // Over an existing channel (tests); `config` names the server in errors and, unless
  // insecure, gives the files of the TLS probe run after an UNAVAILABLE.
  AdminClient(std::shared_ptr<grpc::Channel> channel, AdminConfig config, absl::Duration rpc_timeout);

  absl::StatusOr<v1::SubmitJobResponse> SubmitJob(const std::string& job_yaml, const std::string& source);
  absl::StatusOr<v1::ListJobsResponse> ListJobs();
  // name "" = the running job, or the last one to end.
  absl::StatusOr<v1::JobStatusResponse> GetJobStatus(const std::string& name);
  absl::StatusOr<v1::AbortJobResponse> AbortJob(const std::string& name, const std::string& reason);
  absl::StatusOr<v1::ListSitesResponse> ListSites();
  // Calls `on_lines` for each message of the stream, in order, until the server ends it.
  // An error from `on_lines` cancels the call and is returned. Without request.follow() the
  // whole call is bounded by the RPC timeout; with it, it lasts until the job has ended.
  absl::Status StreamJobLog(const v1::JobLogRequest& request,
                            const std::function<absl::Status(const v1::JobLogLines&)>& on_lines);
  // grpc.health.v1.Health/Check of service "" (the whole server), waiting at most the RPC
  // timeout for the channel to connect: "SERVING", "NOT_SERVING", ...
  absl::StatusOr<std::string> CheckHealth();

  const AdminConfig& config() const { return config_; }

 private:
  // The absl::Status of a failed `rpc` (OK stays OK), reworded as the header says.
  absl::Status Convert(absl::StatusCode code, absl::string_view message, absl::string_view rpc);
  absl::Status Convert(const grpc::Status& status, absl::string_view rpc);

  const std::shared_ptr<grpc::Channel> channel_;
  const std::unique_ptr<v1::FedPrLLMAdmin::Stub> stub_;
  const AdminConfig config_;
  const absl::Duration rpc_timeout_;
};

}  // namespace fedprllm
