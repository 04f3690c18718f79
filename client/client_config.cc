#include "client/client_config.h"

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <functional>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace fedprllm {
namespace {

// One option per YAML key (nested keys joined with '.'). Setters may throw YAML::Exception;
// ParseClientConfig is the wall.
struct Option {
  const char* key;
  std::function<void(const YAML::Node&, ClientConfig*)> set;
};

template <typename T>
std::function<void(const YAML::Node&, ClientConfig*)> Field(T ClientConfig::*member) {
  return [member](const YAML::Node& n, ClientConfig* c) { c->*member = n.as<T>(); };
}
template <typename T>
std::function<void(const YAML::Node&, ClientConfig*)> TlsField(T ClientTlsConfig::*member) {
  return [member](const YAML::Node& n, ClientConfig* c) { c->tls.*member = n.as<T>(); };
}

const std::vector<Option>& Options() {
  static const auto* options = new std::vector<Option>{
      {"server_address", Field(&ClientConfig::server_address)},
      {"tls.cert", TlsField(&ClientTlsConfig::cert)},
      {"tls.key", TlsField(&ClientTlsConfig::key)},
      {"tls.ca", TlsField(&ClientTlsConfig::ca)},
      {"server_name", Field(&ClientConfig::server_name)},
      {"insecure", Field(&ClientConfig::insecure)},
      {"name", Field(&ClientConfig::name)},
      {"model", Field(&ClientConfig::model)},
      {"tokenizer", Field(&ClientConfig::tokenizer)},
      {"calibration", Field(&ClientConfig::calibration)},
      {"nsamples", Field(&ClientConfig::nsamples)},
      {"seqlen", Field(&ClientConfig::seqlen)},
      {"seed", Field(&ClientConfig::seed)},
      {"device", Field(&ClientConfig::device)},
      {"dtype", Field(&ClientConfig::dtype)},
      {"batch_size", Field(&ClientConfig::batch_size)},
      {"metric", Field(&ClientConfig::metric)},
      {"local_group", Field(&ClientConfig::local_group)},
      {"retry_initial_seconds", Field(&ClientConfig::retry_initial_seconds)},
      {"retry_max_seconds", Field(&ClientConfig::retry_max_seconds)},
      {"rpc_timeout_seconds", Field(&ClientConfig::rpc_timeout_seconds)},
  };
  return *options;
}

absl::Status Bad(absl::string_view key, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("config key '", key, "': ", why));
}

template <typename T>
absl::Status CheckRange(absl::string_view key, T value, T lo, T hi) {
  if (!(value >= lo && value <= hi)) return Bad(key, absl::StrCat("value ", value, " is outside [", lo, ", ", hi, "]"));
  return absl::OkStatus();
}

}  // namespace

absl::Status ClientConfig::Validate() {
  const size_t colon = server_address.rfind(':');
  if (server_address.empty() || colon == std::string::npos || colon + 1 == server_address.size()) {
    return Bad("server_address", absl::StrCat("\"", server_address, "\" is not host:port"));
  }
  if (!insecure) {
    if (tls.cert.empty()) return Bad("tls.cert", "is required (or set insecure: true for a plaintext test)");
    if (tls.key.empty()) return Bad("tls.key", "is required");
    if (tls.ca.empty()) return Bad("tls.ca", "is required");
  } else if (name.empty()) {
    return Bad("name", "is required in insecure mode (it is the client's identity)");
  }
  if (model.empty()) return Bad("model", "is required");
  if (calibration.empty() || calibration.size() > 64) {
    return Bad("calibration", absl::StrCat("lists ", calibration.size(), " sources, expected 1..64"));
  }
  RETURN_IF_ERROR(CheckRange<int64_t>("nsamples", nsamples, 1, 1000000));
  RETURN_IF_ERROR(CheckRange<int64_t>("seqlen", seqlen, 2, 131072));
  RETURN_IF_ERROR(CheckRange<int64_t>("batch_size", batch_size, 1, 4096));
  if (metric != "wanda" && metric != "magnitude") return Bad("metric", absl::StrCat("\"", metric, "\": expected wanda or magnitude"));
  if (local_group != "row" && local_group != "layer") {
    return Bad("local_group", absl::StrCat("\"", local_group, "\": expected row or layer"));
  }
  if (!dtype.empty() && dtype != "float32" && dtype != "bfloat16" && dtype != "float16") {
    return Bad("dtype", absl::StrCat("\"", dtype, "\": expected float32, bfloat16 or float16"));
  }
  RETURN_IF_ERROR(CheckRange("retry_initial_seconds", retry_initial_seconds, 0.01, 60.0));
  RETURN_IF_ERROR(CheckRange("retry_max_seconds", retry_max_seconds, 1.0, 86400.0));
  RETURN_IF_ERROR(CheckRange("rpc_timeout_seconds", rpc_timeout_seconds, 1.0, 86400.0));
  return absl::OkStatus();
}

absl::StatusOr<ClientConfig> ParseClientConfig(const std::string& yaml_text, const std::string& source) {
  ClientConfig config;
  std::string key = "(document)";
  int line = 0;
  try {
    const YAML::Node root = YAML::Load(yaml_text);
    if (!root.IsMap()) return absl::InvalidArgumentError(absl::StrCat(source, ": expected a mapping of keys"));
    std::vector<std::pair<std::string, YAML::Node>> entries;
    for (const auto& kv : root) {
      const std::string top = kv.first.as<std::string>();
      if (top == "tls" && kv.second.IsMap()) {
        for (const auto& sub : kv.second) entries.emplace_back("tls." + sub.first.as<std::string>(), sub.second);
      } else {
        entries.emplace_back(top, kv.second);
      }
    }
    for (const auto& [name, node] : entries) {
      key = name;
      line = node.Mark().line + 1;
      const Option* option = nullptr;
      for (const Option& o : Options()) {
        if (name == o.key) option = &o;
      }
      if (option == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat(source, ":", line, ": unknown config key '", name, "' (see deploy/client.example.yaml)"));
      }
      if (!node.IsNull()) option->set(node, &config);
    }
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ":", e.mark.is_null() ? line : e.mark.line + 1,
                                                   ": config key '", key, "': ", e.msg));
  }
  if (absl::Status s = config.Validate(); !s.ok()) return absl::InvalidArgumentError(absl::StrCat(source, ": ", s.message()));
  return config;
}

absl::StatusOr<ClientConfig> LoadClientConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read config file ", path));
  std::stringstream text;
  text << in.rdbuf();
  return ParseClientConfig(text.str(), path);
}

}  // namespace fedprllm
