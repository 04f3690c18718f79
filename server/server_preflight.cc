// The checks of `fedprllm-server check`: config, certificate, listen address, directories,
// the own job's model.
#include "server/server_preflight.h"

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "model/llama_model.h"
#include "model/model_summary.h"
#include "model/tokenizer.h"
#include "server/transport_limits.h"

namespace fedprllm {

namespace fs = std::filesystem;

namespace {

// Binds config.listen_address as RunServer does (its transport limits, so no
// SO_REUSEPORT: a port another server holds fails), then lets it go.
absl::Status CheckListen(const ServerConfig& config) {
  grpc::ServerBuilder builder;
  ApplyTransportLimits(config, &builder);
  int port = 0;
  builder.AddListeningPort(config.listen_address, grpc::InsecureServerCredentials(), &port);
  grpc::CallbackGenericService service;  // answers UNIMPLEMENTED; the server is never called
  builder.RegisterCallbackGenericService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) return ListenError(config.listen_address);
  server->Shutdown(std::chrono::system_clock::now());
  return absl::OkStatus();
}

absl::Status CanCreateFileIn(const std::string& config_key, const std::string& dir, const std::string& shown) {
  std::string name = (fs::path(dir) / ".fedprllm-check-XXXXXX").string();
  const int fd = ::mkstemp(name.data());
  if (fd < 0) {
    return absl::FailedPreconditionError(absl::StrCat("config key '", config_key, "' (", shown,
                                                      "): cannot create files in ", dir, ": ", std::strerror(errno)));
  }
  ::close(fd);
  ::unlink(name.c_str());
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckWritableDirectory(const std::string& config_key, const std::string& dir, std::string* how) {
  std::error_code ec;
  fs::path path = fs::absolute(dir, ec);
  if (ec) path = dir;
  if (fs::exists(path, ec)) {
    if (!fs::is_directory(path, ec)) {
      return absl::FailedPreconditionError(
          absl::StrCat("config key '", config_key, "' (", dir, ") exists and is not a directory"));
    }
    *how = "exists, writable";
    return CanCreateFileIn(config_key, path.string(), dir);
  }
  fs::path parent = path.parent_path();
  while (!parent.empty() && !fs::exists(parent, ec) && parent != parent.parent_path()) parent = parent.parent_path();
  if (!fs::is_directory(parent, ec)) {
    return absl::FailedPreconditionError(absl::StrCat("config key '", config_key, "' (", dir,
                                                      ") cannot be created: ", parent.string(), " is not a directory"));
  }
  *how = absl::StrCat("will be created in ", parent.string(), ", writable");
  return CanCreateFileIn(config_key, parent.string(), dir);
}

bool RunServerPreflight(const std::string& config_path, const ServerPreflightOptions& options, CheckReport* report) {
  if (config_path.empty()) {
    report->Fail("config", "--config is required");
    return false;
  }
  absl::StatusOr<ServerConfig> config = LoadServerConfig(config_path);
  if (config.ok() && !options.listen_address.empty()) {
    config->listen_address = options.listen_address;
    if (absl::Status s = config->Validate(); !s.ok()) config = s;
  }
  if (!config.ok()) {
    report->Fail("config", config.status().message());
    return false;
  }
  report->Ok("config", absl::StrCat(config_path, "; ", config->allowed_clients.size(), " allowed clients",
                                    config->insecure ? "; PLAINTEXT (insecure: true)" : ""));
  return RunServerChecks(*config, options, report);
}

bool RunServerChecks(const ServerConfig& config, const ServerPreflightOptions& options, CheckReport* report) {
  const absl::Time now = options.now == absl::InfinitePast() ? absl::Now() : options.now;
  if (config.insecure) {
    report->Skip("certificate", "insecure: true: no TLS, clients are not authenticated");
  } else {
    ReportCertificateCheck(TlsFiles{config.tls.cert, config.tls.key, config.tls.ca}, TlsRole::kServer, report, now,
                           options.certificate_warning);
  }

  if (absl::Status s = CheckListen(config); !s.ok()) {
    report->Fail("listen", s.message());
  } else {
    report->Ok("listen", absl::StrCat(config.listen_address, " can be bound"));
  }

  const std::pair<const char*, const std::string*> dirs[] = {
      {"state_dir", &config.state_dir}, {"output_dir", &config.output_dir}, {"jobs_dir", &config.jobs_dir}};
  for (const auto& [key, dir] : dirs) {
    if (dir->empty()) continue;
    std::string how;
    if (absl::Status s = CheckWritableDirectory(key, *dir, &how); !s.ok()) {
      report->Fail(key, s.message());
    } else {
      report->Ok(key, absl::StrCat(*dir, " (", how, ")"));
    }
  }

  if (config.model.empty()) {
    report->Skip("model", "the config defines no job of its own (no 'model'); submitted jobs name theirs");
    return report->passed();
  }
  absl::StatusOr<LlamaModel> model = LlamaModel::Load(config.model);
  if (!model.ok()) {
    report->Fail("model", absl::StrCat("config key 'model': ", model.status().message()));
    return report->passed();
  }
  // As RunServer: an explicit tokenizer must exist; one beside the model is optional.
  std::string tokenizer = config.tokenizer;
  std::error_code ec;
  if (!tokenizer.empty() && !fs::exists(tokenizer, ec)) {
    report->Fail("model", absl::StrCat("config key 'tokenizer': ", tokenizer, " does not exist"));
    return report->passed();
  }
  if (tokenizer.empty()) {
    absl::StatusOr<std::string> found = FindTokenizer(config.model, "");
    tokenizer = found.ok() ? *found : "(none)";
  }
  report->Ok(
      "model",
      absl::StrCat(config.model, config.model_name.empty() ? "" : absl::StrCat(" (", config.model_name, ")"), ": ",
                   DescribeModelShape(*model), "; tokenizer ", tokenizer, "; fingerprint ", model->Fingerprint()));
  return report->passed();
}

}  // namespace fedprllm
