// fedprllm-server's top level: load the model, start the job and the mTLS gRPC server, run
// to the end of the job.
#include "server/server.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/server_credentials.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "common/status_macros.h"
#include "model/cpu_runtime.h"
#include "model/tokenizer.h"
#include "server/federation_job.h"
#include "server/fedprllm_service.h"
#include "server/transport_limits.h"
#include "tls/grpc_log.h"
#include "tls/key_pair_check.h"

namespace fedprllm {

absl::StatusOr<std::string> ReadSmallFile(const std::string& path, const std::string& key) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("config key '", key, "': cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  if (text.str().empty()) return absl::InvalidArgumentError(absl::StrCat("config key '", key, "': ", path, " is empty"));
  return text.str();
}

namespace {

// The running job, for the signal thread; a signal that comes before the job exists stops it
// as soon as it is registered.
absl::Mutex current_job_mu(absl::kConstInit);
FederationJob* current_job ABSL_GUARDED_BY(current_job_mu) = nullptr;
const char* shutdown_requested ABSL_GUARDED_BY(current_job_mu) = nullptr;

void CurrentJob(FederationJob* job) {
  absl::MutexLock lock(&current_job_mu);
  current_job = job;
  if (job != nullptr && shutdown_requested != nullptr) job->RequestShutdown(shutdown_requested);
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(const ServerConfig& config) {
  if (config.insecure) {
    spdlog::warn("insecure: true: serving PLAINTEXT without client authentication; identities are self-declared. "
                 "Never use this outside a test.");
    return grpc::InsecureServerCredentials();
  }
  // A bad file is reported here, by name and cause; gRPC would only fail to listen.
  RETURN_IF_ERROR(CheckKeyPair(TlsFiles{config.tls.cert, config.tls.key, config.tls.ca}, TlsRole::kServer));
  grpc::SslServerCredentialsOptions options(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  ASSIGN_OR_RETURN(options.pem_root_certs, ReadSmallFile(config.tls.ca, "tls.ca"));
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  ASSIGN_OR_RETURN(pair.private_key, ReadSmallFile(config.tls.key, "tls.key"));
  ASSIGN_OR_RETURN(pair.cert_chain, ReadSmallFile(config.tls.cert, "tls.cert"));
  options.pem_key_cert_pairs.push_back(std::move(pair));
  return grpc::SslServerCredentials(options);
}

}  // namespace

absl::Status RunServer(const ServerConfig& config) {
  // gRPC's own lines through spdlog; a failed TLS handshake as one line naming the client.
  InstallGrpcLogRouting({TlsRole::kServer});
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials, Credentials(config));
  const auto load_start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(LlamaModel model, LlamaModel::Load(config.model));
  FitBlasThreadsToModel(model.config().hidden_size);
  const double load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
  std::string tokenizer = config.tokenizer;
  if (tokenizer.empty()) {
    auto found = FindTokenizer(config.model, "");
    if (found.ok()) tokenizer = *found;
  } else if (!std::filesystem::exists(tokenizer)) {
    return absl::NotFoundError(absl::StrCat("config key 'tokenizer': ", tokenizer, " does not exist"));
  }
  spdlog::info("model {} loaded in {:.2f} s: {} decoder layers, {}; tokenizer {}", config.model, load_seconds,
               model.config().num_hidden_layers, TorchDtypeName(model.config().dtype),
               tokenizer.empty() ? "(none)" : tokenizer);

  ASSIGN_OR_RETURN(std::unique_ptr<FederationJob> job, FederationJob::Create(config, std::move(model), tokenizer));
  job->RecordPhase("load_model_seconds", load_seconds);
  spdlog::info("model fingerprint {}", job->fingerprint());

  FedPrLLMService service(job.get(), config.insecure);
  grpc::ServerBuilder builder;
  // Bounds before trust (docs/round_protocol.md §9): a certificate that is not allowlisted
  // is refused at the call's headers, before its request is read; message size, memory
  // quota, stream window and streams per connection bound what any peer can make gRPC
  // buffer; no SO_REUSEPORT, so a port in use fails here.
  if (!config.insecure) {
    credentials->SetAuthMetadataProcessor(std::make_shared<AllowlistAdmission>(job->allowlist()));
  }
  ApplyTransportLimits(config, &builder);
  service.SetUploadIdleTimeout(config.upload_idle_timeout_seconds);
  int port = 0;
  builder.AddListeningPort(config.listen_address, credentials, &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) return ListenError(config.listen_address);
  spdlog::info("transport bounds: messages up to {} bytes, {} MiB transport memory, {} streams per connection, "
               "upload streams idle at most {} s",
               MaxReceiveMessageBytes(config), TransportMemoryQuotaBytes(config) >> 20, kMaxConcurrentStreams,
               config.upload_idle_timeout_seconds);
  spdlog::info("listening on {} ({})", config.listen_address, config.insecure ? "PLAINTEXT" : "mutual TLS");

  job->Start();
  CurrentJob(job.get());
  const absl::Status result = job->WaitUntilFinished();
  CurrentJob(nullptr);
  if (absl::IsCancelled(result)) {
    // SIGTERM/SIGINT: every step the job took is already durable; stop after the current one.
    job->Stop();
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    server->Wait();
    spdlog::info("server stopped ({}); job {} can be resumed at {}: start the server again with the same config",
                 std::string(result.message()), job->job_id(), job->ResumePoint());
    return absl::OkStatus();
  }
  // Let every joined client learn the outcome from its long poll before the port closes.
  const std::vector<std::string> untold =
      job->WaitForClientsToLearnOutcome(int64_t{1000} * (config.poll_window_seconds + 5));
  if (!untold.empty()) {
    spdlog::warn("{} joined clients did not poll for the outcome before shutdown: {}", untold.size(),
                 absl::StrJoin(untold, ", "));
  }
  job->Stop();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  server->Wait();
  if (result.ok()) spdlog::info("server exiting: job {} done", job->job_id());
  return result;
}

void RequestServerShutdown(const char* signal_name) {
  spdlog::info("{} received: stopping (a second one exits at once)", signal_name);
  absl::MutexLock lock(&current_job_mu);
  shutdown_requested = signal_name;
  if (current_job != nullptr) current_job->RequestShutdown(signal_name);
}

}  // namespace fedprllm
