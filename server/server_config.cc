#include "server/server_config.h"

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace fedprllm {
namespace {

// One option: its YAML key (nested keys joined with '.') and how to store its value. The
// setter may throw YAML::Exception (bad conversion); ParseServerConfig is the wall.
struct Option {
  const char* key;
  std::function<void(const YAML::Node&, ServerConfig*)> set;
};

template <typename T>
std::function<void(const YAML::Node&, ServerConfig*)> Field(T ServerConfig::*member) {
  return [member](const YAML::Node& n, ServerConfig* c) { c->*member = n.as<T>(); };
}
template <typename T>
std::function<void(const YAML::Node&, ServerConfig*)> TlsField(T ServerTlsConfig::*member) {
  return [member](const YAML::Node& n, ServerConfig* c) { c->tls.*member = n.as<T>(); };
}

const std::vector<Option>& Options() {
  static const auto* options = new std::vector<Option>{
      {"listen_address", Field(&ServerConfig::listen_address)},
      {"tls.cert", TlsField(&ServerTlsConfig::cert)},
      {"tls.key", TlsField(&ServerTlsConfig::key)},
      {"tls.ca", TlsField(&ServerTlsConfig::ca)},
      {"insecure", Field(&ServerConfig::insecure)},
      {"allowed_clients", Field(&ServerConfig::allowed_clients)},
      {"expected_clients", Field(&ServerConfig::expected_clients)},
      {"min_clients", Field(&ServerConfig::min_clients)},
      {"model", Field(&ServerConfig::model)},
      {"tokenizer", Field(&ServerConfig::tokenizer)},
      {"output_dir", Field(&ServerConfig::output_dir)},
      {"state_dir", Field(&ServerConfig::state_dir)},
      {"sparsity", Field(&ServerConfig::sparsity)},
      {"pattern", Field(&ServerConfig::pattern)},
      {"group", Field(&ServerConfig::group)},
      {"strategy", Field(&ServerConfig::strategy)},
      {"weight_scaling", Field(&ServerConfig::weight_scaling)},
      {"tie_break", Field(&ServerConfig::tie_break)},
      {"seed", Field(&ServerConfig::seed)},
      {"join_timeout_seconds", Field(&ServerConfig::join_timeout_seconds)},
      {"round_deadline_seconds", Field(&ServerConfig::round_deadline_seconds)},
      {"max_round_extensions", Field(&ServerConfig::max_round_extensions)},
      {"poll_window_seconds", Field(&ServerConfig::poll_window_seconds)},
      {"max_chunk_bytes", Field(&ServerConfig::max_chunk_bytes)},
  };
  return *options;
}

absl::Status Bad(absl::string_view key, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("config key '", key, "': ", why));
}

template <typename T>
absl::Status CheckRange(absl::string_view key, T value, T lo, T hi) {
  if (value < lo || value > hi) {
    return Bad(key, absl::StrCat("value ", value, " is outside [", lo, ", ", hi, "]"));
  }
  return absl::OkStatus();
}

absl::Status Required(absl::string_view key, const std::string& value) {
  return value.empty() ? Bad(key, "is required") : absl::OkStatus();
}

}  // namespace

bool ValidIdentity(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-'))) return false;
  }
  return true;
}

absl::Status ServerConfig::Validate() {
  if (listen_address.empty() || listen_address.rfind(':') == std::string::npos ||
      listen_address.substr(listen_address.rfind(':') + 1).empty() ||
      listen_address.substr(listen_address.rfind(':') + 1) == "0") {
    return Bad("listen_address", absl::StrCat("\"", listen_address, "\" is not host:port with a nonzero port"));
  }
  if (!insecure) {
    RETURN_IF_ERROR(Required("tls.cert", tls.cert));
    RETURN_IF_ERROR(Required("tls.key", tls.key));
    RETURN_IF_ERROR(Required("tls.ca", tls.ca));
  }
  if (allowed_clients.empty() || allowed_clients.size() > 1000) {
    return Bad("allowed_clients", absl::StrCat("lists ", allowed_clients.size(), " names, expected 1..1000"));
  }
  std::set<std::string> seen;
  for (const std::string& name : allowed_clients) {
    if (!ValidIdentity(name)) {
      return Bad("allowed_clients", absl::StrCat("\"", name, "\" is not a valid identity ([A-Za-z0-9._-], 1..64 bytes)"));
    }
    if (!seen.insert(name).second) return Bad("allowed_clients", absl::StrCat("\"", name, "\" is listed twice"));
  }
  const int allowed = static_cast<int>(allowed_clients.size());
  if (expected_clients == 0) expected_clients = allowed;
  RETURN_IF_ERROR(CheckRange("expected_clients", expected_clients, 1, allowed));
  if (min_clients == 0) min_clients = expected_clients;
  RETURN_IF_ERROR(CheckRange("min_clients", min_clients, 1, expected_clients));
  RETURN_IF_ERROR(Required("model", model));
  RETURN_IF_ERROR(Required("output_dir", output_dir));
  RETURN_IF_ERROR(Required("state_dir", state_dir));
  if (!(sparsity >= 0.0 && sparsity < 1.0)) return Bad("sparsity", absl::StrCat("value ", sparsity, " is outside [0, 1)"));
  if (auto p = SparsityPattern::Parse(pattern, sparsity); !p.ok()) return Bad("pattern", p.status().message());
  if (pattern != "unstructured" && pattern != "2:4" && pattern != "4:8") {
    return Bad("pattern", absl::StrCat("\"", pattern, "\": expected unstructured, 2:4 or 4:8"));
  }
  if (auto g = ParseComparisonGroup(group); !g.ok()) return Bad("group", g.status().message());
  if (auto s = ParseStrategy(strategy); !s.ok()) return Bad("strategy", s.status().message());
  if (auto t = ParseTieBreak(tie_break); !t.ok()) return Bad("tie_break", t.status().message());
  RETURN_IF_ERROR(CheckRange("join_timeout_seconds", join_timeout_seconds, 1, 86400));
  RETURN_IF_ERROR(CheckRange("round_deadline_seconds", round_deadline_seconds, 10, 604800));
  RETURN_IF_ERROR(CheckRange("max_round_extensions", max_round_extensions, 0, 100));
  RETURN_IF_ERROR(CheckRange("poll_window_seconds", poll_window_seconds, 1, 300));
  RETURN_IF_ERROR(CheckRange<int64_t>("max_chunk_bytes", max_chunk_bytes, 4096, 2 << 20));
  return absl::OkStatus();
}

absl::StatusOr<AggregationOptions> ServerConfig::Aggregation() const {
  AggregationOptions options;
  ASSIGN_OR_RETURN(options.group, ParseComparisonGroup(group));
  ASSIGN_OR_RETURN(options.pattern, SparsityPattern::Parse(pattern, sparsity));
  ASSIGN_OR_RETURN(options.tie_break, ParseTieBreak(tie_break));
  options.seed = seed;
  options.weight_scaling = weight_scaling;
  return options;
}

absl::StatusOr<ServerConfig> ParseServerConfig(const std::string& yaml_text, const std::string& source) {
  ServerConfig config;
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
            absl::StrCat(source, ":", line, ": unknown config key '", name, "' (see deploy/server.example.yaml)"));
      }
      if (!node.IsNull()) option->set(node, &config);
    }
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ":", e.mark.is_null() ? line : e.mark.line + 1,
                                                   ": config key '", key, "': ", e.msg));
  }
  if (absl::Status s = config.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", s.message()));
  }
  return config;
}

absl::StatusOr<ServerConfig> LoadServerConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read config file ", path));
  std::stringstream text;
  text << in.rdbuf();
  return ParseServerConfig(text.str(), path);
}

}  // namespace fedprllm
