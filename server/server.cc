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
#include "common/status_macros.h"
#include "model/cpu_runtime.h"
#include "model/tokenizer.h"
#include "server/federation_job.h"
#include "server/fedprllm_service.h"

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

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(const ServerConfig& config) {
  if (config.insecure) {
    spdlog::warn("insecure: true: serving PLAINTEXT without client authentication; identities are self-declared. "
                 "Never use this outside a test.");
    return grpc::InsecureServerCredentials();
  }
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
  int port = 0;
  builder.AddListeningPort(config.listen_address, credentials, &port);
  builder.RegisterService(&service);
  // A chunk message is max_chunk_bytes plus a few dozen bytes of framing; anything much
  // larger is refused by gRPC itself (RESOURCE_EXHAUSTED) before it is buffered.
  builder.SetMaxReceiveMessageSize(static_cast<int>(config.max_chunk_bytes + 64 * 1024));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", config.listen_address,
                                               " (config key 'listen_address'; in use or bad address?)"));
  }
  spdlog::info("listening on {} ({})", config.listen_address, config.insecure ? "PLAINTEXT" : "mutual TLS");

  job->Start();
  const absl::Status result = job->WaitUntilFinished();
  // Let every joined client learn the outcome from its long poll before the port closes.
  const std::vector<std::string> untold =
      job->WaitForClientsToLearnOutcome(int64_t{1000} * (config.poll_window_seconds + 5));
  if (!untold.empty()) spdlog::warn("{} joined clients did not poll for the outcome before shutdown", untold.size());
  job->Stop();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  server->Wait();
  if (result.ok()) spdlog::info("server exiting: job {} done", job->job_id());
  return result;
}

}  // namespace fedprllm
