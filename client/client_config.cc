// fedprllm-client's YAML config: its key table and the checks of every value.
#include "client/client_config.h"

#include <map>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/calibration_data.h"
#include "config/yaml_config.h"

namespace fedprllm {
namespace {

std::map<std::string, YamlSetter> Setters(ClientConfig* c) {
  return {
      {"server_address", StoreIn(&c->server_address)},
      {"tls.cert", StoreIn(&c->tls.cert)},
      {"tls.key", StoreIn(&c->tls.key)},
      {"tls.ca", StoreIn(&c->tls.ca)},
      {"server_name", StoreIn(&c->server_name)},
      {"insecure", StoreIn(&c->insecure)},
      {"name", StoreIn(&c->name)},
      {"model", StoreIn(&c->model)},
      {"tokenizer", StoreIn(&c->tokenizer)},
      {"models", StoreIn(&c->models)},
      {"exit_after_jobs", StoreIn(&c->exit_after_jobs)},
      {"calibration", StoreIn(&c->calibration)},
      {"nsamples", StoreIn(&c->nsamples)},
      {"seqlen", StoreIn(&c->seqlen)},
      {"seed", StoreIn(&c->seed)},
      {"device", StoreIn(&c->device)},
      {"dtype", StoreIn(&c->dtype)},
      {"batch_size", StoreIn(&c->batch_size)},
      {"activations_on_host", StoreIn(&c->activations_on_host)},
      {"metric", StoreIn(&c->metric)},
      {"local_group", StoreIn(&c->local_group)},
      {"retry_initial_seconds", StoreIn(&c->retry_initial_seconds)},
      {"retry_max_seconds", StoreIn(&c->retry_max_seconds)},
      {"rpc_timeout_seconds", StoreIn(&c->rpc_timeout_seconds)},
      {"heartbeat_seconds", StoreIn(&c->heartbeat_seconds)},
      {"progress_log_seconds", StoreIn(&c->progress_log_seconds)},
      {"log_format", StoreIn(&c->log_format)},
  };
}

}  // namespace

absl::Status ClientConfig::Validate() {
  const size_t colon = server_address.rfind(':');
  if (server_address.empty() || colon == std::string::npos || colon + 1 == server_address.size()) {
    return ConfigKeyError("server_address", absl::StrCat("\"", server_address, "\" is not host:port"));
  }
  if (!insecure) {
    RETURN_IF_ERROR(RequireTlsPaths(tls.cert, tls.key, tls.ca));
  } else if (name.empty()) {
    return ConfigKeyError("name", "is required in insecure mode (it is the client's identity)");
  }
  if (model.empty() && models.empty()) return ConfigKeyError("model", "is required when 'models' lists no model");
  for (const auto& [name, path] : models) {
    if (name.empty() || path.empty()) {
      return ConfigKeyError("models", absl::StrCat("entry \"", name, "\" needs a name and a path"));
    }
  }
  RETURN_IF_ERROR(CheckConfigRange("exit_after_jobs", exit_after_jobs, 0, 1000000));
  if (calibration.empty() || calibration.size() > 64) {
    return ConfigKeyError("calibration", absl::StrCat("lists ", calibration.size(), " sources, expected 1..64"));
  }
  for (const std::string& spec : calibration) {
    if (absl::StatusOr<CalibrationSource> source = ParseCalibrationSource(spec); !source.ok()) {
      return ConfigKeyError("calibration", source.status().message());
    }
  }
  RETURN_IF_ERROR(CheckConfigRange<int64_t>("nsamples", nsamples, 1, 1000000));
  RETURN_IF_ERROR(CheckConfigRange<int64_t>("seqlen", seqlen, 2, 131072));
  RETURN_IF_ERROR(CheckConfigRange<int64_t>("batch_size", batch_size, 1, 4096));
  if (metric != "wanda" && metric != "magnitude") return ConfigKeyError("metric", absl::StrCat("\"", metric, "\": expected wanda or magnitude"));
  if (local_group != "row" && local_group != "layer") {
    return ConfigKeyError("local_group", absl::StrCat("\"", local_group, "\": expected row or layer"));
  }
  if (!dtype.empty() && dtype != "float32" && dtype != "bfloat16" && dtype != "float16") {
    return ConfigKeyError("dtype", absl::StrCat("\"", dtype, "\": expected float32, bfloat16 or float16"));
  }
  RETURN_IF_ERROR(CheckConfigRange("retry_initial_seconds", retry_initial_seconds, 0.01, 60.0));
  RETURN_IF_ERROR(CheckConfigRange("retry_max_seconds", retry_max_seconds, 1.0, 604800.0));
  RETURN_IF_ERROR(CheckConfigRange("heartbeat_seconds", heartbeat_seconds, 0.1, 3600.0));
  RETURN_IF_ERROR(CheckConfigRange("rpc_timeout_seconds", rpc_timeout_seconds, 1.0, 86400.0));
  RETURN_IF_ERROR(CheckConfigRange("progress_log_seconds", progress_log_seconds, 0.1, 3600.0));
  if (log_format != "text" && log_format != "json") {
    return ConfigKeyError("log_format", absl::StrCat("\"", log_format, "\": expected text or json"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ClientConfig> ParseClientConfig(const std::string& yaml_text, const std::string& source) {
  ClientConfig config;
  RETURN_IF_ERROR(ApplyYamlConfig(yaml_text, source, Setters(&config), "deploy/client.example.yaml"));
  if (absl::Status s = config.Validate(); !s.ok()) return absl::InvalidArgumentError(absl::StrCat(source, ": ", s.message()));
  return config;
}

absl::StatusOr<ClientConfig> LoadClientConfig(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadConfigFile(path));
  return ParseClientConfig(text, path);
}

}  // namespace fedprllm
