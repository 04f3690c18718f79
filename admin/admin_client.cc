// AdminClient: channel setup from AdminConfig, the admin RPCs with deadlines, and the
// rewording of their failures for operators.
#include "admin/admin_client.h"

#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <chrono>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "config/yaml_config.h"
#include "proto/health_client.h"
#include "tls/key_pair_check.h"
#include "tls/server_probe.h"

namespace fedprllm {
namespace {

void SetDeadline(grpc::ClientContext* context, absl::Duration timeout) {
  context->set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(timeout));
}

std::string Seconds(absl::Duration d) { return absl::StrFormat("%g s", absl::ToDoubleSeconds(d)); }

}  // namespace

absl::StatusOr<std::unique_ptr<AdminClient>> AdminClient::Connect(const AdminConfig& config,
                                                                  absl::Duration rpc_timeout) {
  RETURN_IF_ERROR(config.Validate());
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (config.insecure) {
    credentials = grpc::InsecureChannelCredentials();
  } else {
    // An operator's certificate is a TLS client certificate signed by the federation CA,
    // like a site's; a bad one is reported here in words rather than as UNAVAILABLE (the
    // files are then known readable).
    RETURN_IF_ERROR(CheckKeyPair({config.tls.cert, config.tls.key, config.tls.ca}, TlsRole::kClient));
    grpc::SslCredentialsOptions options;
    ASSIGN_OR_RETURN(options.pem_root_certs, ReadConfigFile(config.tls.ca));
    ASSIGN_OR_RETURN(options.pem_private_key, ReadConfigFile(config.tls.key));
    ASSIGN_OR_RETURN(options.pem_cert_chain, ReadConfigFile(config.tls.cert));
    credentials = grpc::SslCredentials(options);
    if (!config.server_name.empty()) args.SetSslTargetNameOverride(config.server_name);
  }
  return std::make_unique<AdminClient>(grpc::CreateCustomChannel(config.server_address, credentials, args), config,
                                       rpc_timeout);
}

AdminClient::AdminClient(std::shared_ptr<grpc::Channel> channel, AdminConfig config, absl::Duration rpc_timeout)
    : channel_(std::move(channel)),
      stub_(v1::FedPrLLMAdmin::NewStub(channel_)),
      config_(std::move(config)),
      rpc_timeout_(rpc_timeout) {}

absl::Status AdminClient::Convert(absl::StatusCode code, absl::string_view message, absl::string_view rpc) {
  const std::string& address = config_.server_address;
  switch (code) {
    case absl::StatusCode::kOk:
      return absl::OkStatus();
    case absl::StatusCode::kPermissionDenied: {
      absl::Status status(code, message);
      status.SetPayload(
          kAdminHintPayload,
          absl::Cord(config_.insecure ? absl::StrCat(kAdminsListHint, " (insecure: true sends none)")
                                      : absl::StrCat(kAdminsListHint, " (tls.cert: ", config_.tls.cert, ")")));
      return status;
    }
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded: {
      std::string text = code == absl::StatusCode::kUnavailable
                             ? absl::StrCat("cannot reach fedprllm-server at ", address, ": ", message)
                             : absl::StrCat("no answer from fedprllm-server at ", address, " within ",
                                            Seconds(rpc_timeout_), " (", rpc, "): ", message);
      // gRPC says UNAVAILABLE for a certificate the server refuses as for a network that is
      // down; the probe tells them apart.
      if (!config_.insecure) {
        const absl::Status probe = ProbeServer(address, config_.server_name,
                                               {config_.tls.cert, config_.tls.key, config_.tls.ca}, absl::Seconds(5));
        if (!probe.ok() && probe.code() != absl::StatusCode::kUnavailable) {
          absl::StrAppend(&text, "; TLS check: ", probe.message());
        }
      }
      return absl::Status(code, text);
    }
    case absl::StatusCode::kUnimplemented:
      return absl::Status(code, absl::StrCat("fedprllm-server at ", address, " does not serve ", rpc,
                                             " (a server older than this tool?): ", message));
    default:
      return absl::Status(code, message);
  }
}

absl::Status AdminClient::Convert(const grpc::Status& status, absl::string_view rpc) {
  return Convert(static_cast<absl::StatusCode>(status.error_code()), status.error_message(), rpc);
}

absl::StatusOr<v1::SubmitJobResponse> AdminClient::SubmitJob(const std::string& job_yaml, const std::string& source) {
  grpc::ClientContext context;
  SetDeadline(&context, rpc_timeout_);
  v1::SubmitJobRequest request;
  request.set_job_yaml(job_yaml);
  request.set_source(source);
  v1::SubmitJobResponse response;
  RETURN_IF_ERROR(Convert(stub_->SubmitJob(&context, request, &response), "SubmitJob"));
  return response;
}

absl::StatusOr<v1::ListJobsResponse> AdminClient::ListJobs() {
  grpc::ClientContext context;
  SetDeadline(&context, rpc_timeout_);
  v1::ListJobsResponse response;
  RETURN_IF_ERROR(Convert(stub_->ListJobs(&context, v1::ListJobsRequest(), &response), "ListJobs"));
  return response;
}

absl::StatusOr<v1::JobStatusResponse> AdminClient::GetJobStatus(const std::string& name) {
  grpc::ClientContext context;
  SetDeadline(&context, rpc_timeout_);
  v1::JobStatusRequest request;
  request.set_name(name);
  v1::JobStatusResponse response;
  RETURN_IF_ERROR(Convert(stub_->GetJobStatus(&context, request, &response), "GetJobStatus"));
  return response;
}

absl::StatusOr<v1::AbortJobResponse> AdminClient::AbortJob(const std::string& name, const std::string& reason) {
  grpc::ClientContext context;
  SetDeadline(&context, rpc_timeout_);
  v1::AbortJobRequest request;
  request.set_name(name);
  request.set_reason(reason);
  v1::AbortJobResponse response;
  RETURN_IF_ERROR(Convert(stub_->AbortJob(&context, request, &response), "AbortJob"));
  return response;
}

absl::StatusOr<v1::ListSitesResponse> AdminClient::ListSites() {
  grpc::ClientContext context;
  SetDeadline(&context, rpc_timeout_);
  v1::ListSitesResponse response;
  RETURN_IF_ERROR(Convert(stub_->ListSites(&context, v1::ListSitesRequest(), &response), "ListSites"));
  return response;
}

absl::Status AdminClient::StreamJobLog(const v1::JobLogRequest& request,
                                       const std::function<absl::Status(const v1::JobLogLines&)>& on_lines) {
  grpc::ClientContext context;
  if (!request.follow()) SetDeadline(&context, rpc_timeout_);
  std::unique_ptr<grpc::ClientReader<v1::JobLogLines>> reader = stub_->StreamJobLog(&context, request);
  v1::JobLogLines lines;
  absl::Status callback_status;
  while (reader->Read(&lines)) {
    callback_status = on_lines(lines);
    if (!callback_status.ok()) {
      context.TryCancel();
      break;
    }
  }
  const grpc::Status finished = reader->Finish();
  if (!callback_status.ok()) return callback_status;
  return Convert(finished, "StreamJobLog");
}

absl::StatusOr<std::string> AdminClient::CheckHealth() {
  absl::StatusOr<std::string> serving = fedprllm::CheckHealth(channel_, "", absl::ToDoubleSeconds(rpc_timeout_));
  if (!serving.ok()) return Convert(serving.status().code(), serving.status().message(), "grpc.health.v1.Health/Check");
  return serving;
}

}  // namespace fedprllm
