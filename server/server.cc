// fedprllm-server's top level: the mTLS gRPC server with the site, admin and health services,
// the metrics endpoint, and the job queue, run until a shutdown is requested (or, with
// exit_when_idle, until no job is left).
#include "server/server.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "server/admin_service.h"
#include "server/fedprllm_service.h"
#include "server/job_log.h"
#include "server/job_queue.h"
#include "server/server_metrics.h"
#include "server/transport_limits.h"
#include "server/access_policy.h"
#include "tls/certificate_check.h"
#include "tls/grpc_log.h"
#include "tls/key_pair_check.h"
#include "tls/rotating_server_credentials.h"

namespace fedprllm {

namespace {

// The running queue, for the signal thread; a signal that comes before the queue exists
// stops it as soon as it is registered.
absl::Mutex current_queue_mu(absl::kConstInit);
JobQueue* current_queue ABSL_GUARDED_BY(current_queue_mu) = nullptr;
const char* shutdown_requested ABSL_GUARDED_BY(current_queue_mu) = nullptr;
// What RequestServerReload updates, and from which file.
std::shared_ptr<AccessPolicy> current_policy ABSL_GUARDED_BY(current_queue_mu);
std::string current_config_path ABSL_GUARDED_BY(current_queue_mu);

void CurrentQueue(JobQueue* queue) {
  absl::MutexLock lock(&current_queue_mu);
  current_queue = queue;
  if (queue != nullptr && shutdown_requested != nullptr) queue->RequestShutdown(shutdown_requested);
}

// What RequestServerReload rotates; null when insecure.
RotatingServerCredentials* current_tls ABSL_GUARDED_BY(current_queue_mu) = nullptr;

TlsFiles ServerTlsFiles(const ServerConfig& config) { return TlsFiles{config.tls.cert, config.tls.key, config.tls.ca}; }

// The listening port's credentials: rotating mutual TLS (client certificates required and
// verified against tls.ca), or plaintext with `insecure`. A bad file is reported here, by
// name and cause; gRPC would only fail to listen.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(
    const ServerConfig& config, std::unique_ptr<RotatingServerCredentials>* tls) {
  if (config.insecure) {
    spdlog::warn("insecure: true: serving PLAINTEXT without client authentication; identities are self-declared "
                 "and anyone may call the admin API. Never use this outside a test.");
    return grpc::InsecureServerCredentials();
  }
  ASSIGN_OR_RETURN(*tls, RotatingServerCredentials::Create(ServerTlsFiles(config)));
  return (*tls)->credentials();
}

// Warns of a server or CA certificate that expires within 30 days.
void WarnOfExpiringCertificate(const ServerConfig& config) {
  if (config.insecure) return;
  absl::StatusOr<std::vector<std::string>> expiring =
      ExpiringCertificates(ServerTlsFiles(config), absl::Now());
  if (!expiring.ok()) return;
  for (const std::string& line : *expiring) spdlog::warn("certificate expires soon: {}", line);
}

// The health service's answer for the whole server and for the site service.
void SetServing(grpc::Server* server, bool serving) {
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus(serving);
  health->SetServingStatus(v1::FedPrLLM::service_full_name(), serving);
  health->SetServingStatus(v1::FedPrLLMAdmin::service_full_name(), serving);
}

}  // namespace

absl::Status RunServer(const ServerConfig& config, const std::string& config_path) {
  // gRPC's own lines through spdlog; a failed TLS handshake as one line naming the client.
  InstallGrpcLogRouting({TlsRole::kServer});
  std::unique_ptr<RotatingServerCredentials> tls;
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials, Credentials(config, &tls));
  std::unique_ptr<ServerMetrics> metrics;
  if (!config.metrics_address.empty()) {
    ASSIGN_OR_RETURN(metrics, ServerMetrics::Start(config.metrics_address));
    spdlog::info("metrics at http://{}/metrics", config.metrics_address);
  }
  ASSIGN_OR_RETURN(std::unique_ptr<spdlog::formatter> formatter, MakeLogFormatter("server", config.log_format));
  const std::shared_ptr<JobLogSink> job_log = JobLogSink::Install(std::move(formatter));
  JobQueue jobs(config, metrics.get(), job_log.get());
  RETURN_IF_ERROR(jobs.Load());

  auto policy = std::make_shared<AccessPolicy>();
  RETURN_IF_ERROR(policy->Reload(config));
  spdlog::info("access: {}", policy->Describe());
  WarnOfExpiringCertificate(config);
  FedPrLLMService service(&jobs, policy, config.insecure);
  AdminService admin(&jobs, policy, config.insecure);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  // Bounds before trust (docs/round_protocol.md §9): a certificate without the role of the
  // service it calls is refused at the call's headers, before its request is read; message
  // size, memory quota, stream window and streams per connection bound what any peer can
  // make gRPC buffer; no SO_REUSEPORT, so a port in use fails here.
  if (!config.insecure) credentials->SetAuthMetadataProcessor(std::make_shared<AllowlistAdmission>(policy));
  ApplyTransportLimits(config, &builder);
  service.SetUploadIdleTimeout(config.upload_idle_timeout_seconds);
  int port = 0;
  builder.AddListeningPort(config.listen_address, credentials, &port);
  builder.RegisterService(&service);
  builder.RegisterService(&admin);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) return ListenError(config.listen_address);
  spdlog::info("transport bounds: messages up to {} bytes, {} MiB transport memory, {} streams per connection, "
               "upload streams idle at most {} s",
               MaxReceiveMessageBytes(config), TransportMemoryQuotaBytes(config) >> 20, kMaxConcurrentStreams,
               config.upload_idle_timeout_seconds);
  spdlog::info("listening on {} ({}); sites [{}], operators [{}]", config.listen_address,
               config.insecure ? "PLAINTEXT" : "mutual TLS", absl::StrJoin(config.allowed_clients, ", "),
               absl::StrJoin(config.admins, ", "));
  SetServing(server.get(), true);

  {
    absl::MutexLock lock(&current_queue_mu);
    current_policy = policy;
    current_config_path = config_path;
    current_tls = tls.get();
  }
  CurrentQueue(&jobs);
  const absl::Status result = jobs.Run();
  CurrentQueue(nullptr);
  {
    absl::MutexLock lock(&current_queue_mu);
    current_policy = nullptr;
    current_tls = nullptr;
  }
  SetServing(server.get(), false);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  server->Wait();
  spdlog::info("server exiting{}", result.ok() ? "" : absl::StrCat(": ", result.message()));
  return result;
}

void RequestServerReload() {
  absl::MutexLock lock(&current_queue_mu);
  if (current_policy == nullptr || current_config_path.empty()) {
    spdlog::warn("SIGHUP received before the server was serving; nothing reloaded");
    return;
  }
  absl::StatusOr<ServerConfig> config = LoadServerConfig(current_config_path);
  absl::Status reloaded = config.ok() ? current_policy->Reload(*config) : config.status();
  if (!reloaded.ok()) {
    spdlog::error("SIGHUP: {} not reloaded, the previous access rules and certificate stay: {}", current_config_path,
                  std::string(reloaded.message()));
    return;
  }
  spdlog::info("SIGHUP: reloaded allowed_clients, admins and tls.crl from {}: {}", current_config_path,
               current_policy->Describe());
  if (current_tls != nullptr) {
    absl::StatusOr<std::string> rotated = current_tls->Rotate(ServerTlsFiles(*config));
    if (rotated.ok()) {
      spdlog::info("SIGHUP: tls.cert {}; new connections use it within {} s", *rotated,
                   RotatingServerCredentials::kRefreshSeconds);
    } else {
      spdlog::error("SIGHUP: the server certificate is not rotated, the previous one stays: {}",
                    std::string(rotated.status().message()));
    }
  }
  WarnOfExpiringCertificate(*config);
}

void RequestServerShutdown(const char* signal_name) {
  spdlog::info("{} received: stopping (a second one exits at once)", signal_name);
  absl::MutexLock lock(&current_queue_mu);
  shutdown_requested = signal_name;
  if (current_queue != nullptr) current_queue->RequestShutdown(signal_name);
}

}  // namespace fedprllm
