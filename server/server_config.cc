// fedprllm-server's YAML config: its key table and the checks of every value.
#include "server/server_config.h"

#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "config/yaml_config.h"
#include "secagg/fixed_point.h"
#include "server/mask_plausibility.h"

namespace fedprllm {
namespace {

std::map<std::string, YamlSetter> Setters(ServerConfig* c) {
  std::map<std::string, YamlSetter> setters = PruningJobSetters(c);
  setters.insert({
      {"listen_address", StoreIn(&c->listen_address)},
      {"tls.cert", StoreIn(&c->tls.cert)},
      {"tls.key", StoreIn(&c->tls.key)},
      {"tls.ca", StoreIn(&c->tls.ca)},
      {"tls.crl", StoreIn(&c->tls.crl)},
      {"insecure", StoreIn(&c->insecure)},
      {"allowed_clients", StoreIn(&c->allowed_clients)},
      {"admins", StoreIn(&c->admins)},
      {"monitors", StoreIn(&c->monitors)},
      {"jobs_dir", StoreIn(&c->jobs_dir)},
      {"jobs", StoreIn(&c->jobs)},
      {"exit_when_idle", StoreIn(&c->exit_when_idle)},
      {"metrics_address", StoreIn(&c->metrics_address)},
      {"log_format", StoreIn(&c->log_format)},
      {"job_name", StoreIn(&c->job_name)},
      {"state_dir", StoreIn(&c->state_dir)},
      {"poll_window_seconds", StoreIn(&c->poll_window_seconds)},
      {"site_timeout_seconds", StoreIn(&c->site_timeout_seconds)},
      {"resume_grace_seconds", StoreIn(&c->resume_grace_seconds)},
      {"max_chunk_bytes", StoreIn(&c->max_chunk_bytes)},
      {"upload_idle_timeout_seconds", StoreIn(&c->upload_idle_timeout_seconds)},
      {"transport_memory_bytes", StoreIn(&c->transport_memory_bytes)},
  });
  return setters;
}

}  // namespace

std::map<std::string, YamlSetter> PruningJobSetters(ServerConfig* c) {
  return {
      {"model", StoreIn(&c->model)},
      {"model_name", StoreIn(&c->model_name)},
      {"tokenizer", StoreIn(&c->tokenizer)},
      {"output_dir", StoreIn(&c->output_dir)},
      {"expected_clients", StoreIn(&c->expected_clients)},
      {"min_clients", StoreIn(&c->min_clients)},
      {"sparsity", StoreIn(&c->sparsity)},
      {"pattern", StoreIn(&c->pattern)},
      {"group", StoreIn(&c->group)},
      {"strategy", StoreIn(&c->strategy)},
      {"weight_scaling", StoreIn(&c->weight_scaling)},
      {"secure_aggregation", StoreIn(&c->secure_aggregation)},
      {"secure_aggregation_threshold", StoreIn(&c->secure_aggregation_threshold)},
      {"secure_aggregation_fraction_bits", StoreIn(&c->secure_aggregation_fraction_bits)},
      {"tie_break", StoreIn(&c->tie_break)},
      {"seed", StoreIn(&c->seed)},
      {"site_group", StoreIn(&c->site_group)},
      {"outlier_policy", StoreIn(&c->outlier_policy)},
      {"outlier_z_threshold", StoreIn(&c->outlier_z_threshold)},
      {"outlier_min_gap", StoreIn(&c->outlier_min_gap)},
      {"outlier_min_sites", StoreIn(&c->outlier_min_sites)},
      {"join_timeout_seconds", StoreIn(&c->join_timeout_seconds)},
      {"round_deadline_seconds", StoreIn(&c->round_deadline_seconds)},
      {"max_round_extensions", StoreIn(&c->max_round_extensions)},
  };
}

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
    return ConfigKeyError("listen_address", absl::StrCat("\"", listen_address, "\" is not host:port with a nonzero port"));
  }
  if (!insecure) {
    RETURN_IF_ERROR(RequireTlsPaths(tls.cert, tls.key, tls.ca));
  }
  if (allowed_clients.empty() || allowed_clients.size() > 1000) {
    return ConfigKeyError("allowed_clients", absl::StrCat("lists ", allowed_clients.size(), " names, expected 1..1000"));
  }
  // Every identity has one role: a site's, an operator's or a monitor's.
  std::map<std::string, const char*> role_of;
  const auto check_role_list = [&role_of](const char* key, const std::vector<std::string>& names) -> absl::Status {
    for (const std::string& name : names) {
      if (!ValidIdentity(name)) {
        return ConfigKeyError(key, absl::StrCat("\"", name, "\" is not a valid identity ([A-Za-z0-9._-], 1..64 bytes)"));
      }
      if (auto [it, added] = role_of.emplace(name, key); !added) {
        if (it->second == key) return ConfigKeyError(key, absl::StrCat("\"", name, "\" is listed twice"));
        return ConfigKeyError(key, absl::StrCat("\"", name, "\" is also in ", it->second,
                                                "; an identity is a site's, an operator's or a monitor's"));
      }
    }
    return absl::OkStatus();
  };
  if (admins.size() > 100) return ConfigKeyError("admins", absl::StrCat("lists ", admins.size(), " names, expected 0..100"));
  if (monitors.size() > 100) {
    return ConfigKeyError("monitors", absl::StrCat("lists ", monitors.size(), " names, expected 0..100"));
  }
  RETURN_IF_ERROR(check_role_list("allowed_clients", allowed_clients));
  RETURN_IF_ERROR(check_role_list("admins", admins));
  RETURN_IF_ERROR(check_role_list("monitors", monitors));
  if (!jobs.empty() && jobs_dir.empty()) return ConfigKeyError("jobs", "needs jobs_dir (where the jobs' state goes)");
  if (log_format != "text" && log_format != "json") {
    return ConfigKeyError("log_format", absl::StrCat("\"", log_format, "\": expected text or json"));
  }
  if (!metrics_address.empty() && metrics_address.rfind(':') == std::string::npos) {
    return ConfigKeyError("metrics_address", absl::StrCat("\"", metrics_address, "\" is not host:port"));
  }
  if (!has_own_job() && jobs_dir.empty()) {
    return ConfigKeyError("jobs_dir", "is required when the config has no job of its own (model, output_dir, state_dir)");
  }
  const int allowed = static_cast<int>(allowed_clients.size());
  if (expected_clients == 0) expected_clients = allowed;
  RETURN_IF_ERROR(CheckConfigRange("expected_clients", expected_clients, 1, allowed));
  if (min_clients == 0) min_clients = expected_clients;
  RETURN_IF_ERROR(CheckConfigRange("min_clients", min_clients, 1, expected_clients));
  if (has_own_job()) {
    RETURN_IF_ERROR(ValidateJob());
  }
  RETURN_IF_ERROR(CheckConfigRange("poll_window_seconds", poll_window_seconds, 1, 300));
  RETURN_IF_ERROR(CheckConfigRange("site_timeout_seconds", site_timeout_seconds, 2, 86400));
  RETURN_IF_ERROR(CheckConfigRange("resume_grace_seconds", resume_grace_seconds, 1, 86400));
  RETURN_IF_ERROR(CheckConfigRange<int64_t>("max_chunk_bytes", max_chunk_bytes, 4096, 2 << 20));
  RETURN_IF_ERROR(CheckConfigRange("upload_idle_timeout_seconds", upload_idle_timeout_seconds, 1, 3600));
  if (transport_memory_bytes != 0) {
    RETURN_IF_ERROR(CheckConfigRange<int64_t>("transport_memory_bytes", transport_memory_bytes, int64_t{16} << 20,
                                              int64_t{64} << 30));
  }
  return absl::OkStatus();
}

std::string DefaultModelName(const std::string& model_path) {
  std::string path = model_path;
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  std::string base = path.substr(path.rfind('/') == std::string::npos ? 0 : path.rfind('/') + 1);
  if (const size_t dot = base.rfind('.'); dot != std::string::npos && dot > 0) base = base.substr(0, dot);
  return base;
}

absl::Status ServerConfig::ValidateJob() {
  if (!ValidIdentity(job_name)) {
    return ConfigKeyError("name", absl::StrCat("\"", job_name, "\" is not a valid job name ([A-Za-z0-9._-], 1..64 bytes)"));
  }
  RETURN_IF_ERROR(RequireConfigValue("model", model));
  RETURN_IF_ERROR(RequireConfigValue("output_dir", output_dir));
  RETURN_IF_ERROR(RequireConfigValue("state_dir", state_dir));
  if (model_name.empty()) model_name = DefaultModelName(model);
  if (!(sparsity >= 0.0 && sparsity < 1.0)) return ConfigKeyError("sparsity", absl::StrCat("value ", sparsity, " is outside [0, 1)"));
  if (auto p = SparsityPattern::Parse(pattern, sparsity); !p.ok()) return ConfigKeyError("pattern", p.status().message());
  if (pattern != "unstructured" && pattern != "2:4" && pattern != "4:8") {
    return ConfigKeyError("pattern", absl::StrCat("\"", pattern, "\": expected unstructured, 2:4 or 4:8"));
  }
  if (auto g = ParseComparisonGroup(group); !g.ok()) return ConfigKeyError("group", g.status().message());
  if (auto s = ParseStrategy(strategy); !s.ok()) {
    return ConfigKeyError("strategy", s.status().message());
  } else if (*s == Strategy::kExact && weight_scaling) {
    return ConfigKeyError("weight_scaling", "the exact strategy pools statistics, not votes: there is nothing to scale by");
  } else if (*s == Strategy::kExact && outlier_policy == "exclude") {
    return ConfigKeyError("outlier_policy", "the exact strategy has no masks to judge sites by; use \"report\"");
  }
  if (secure_aggregation) {
    if (strategy != "exact") {
      return ConfigKeyError("secure_aggregation", "secure aggregation sums statistics: it needs strategy \"exact\"");
    }
    if (insecure) return ConfigKeyError("secure_aggregation", "sites sign their keys with their TLS keys: needs TLS");
    const int n = static_cast<int>(allowed_clients.size());
    if (n < 3) {
      return ConfigKeyError("secure_aggregation",
                            absl::StrCat("needs at least 3 allowed sites (with 2, the sum and one site's own vector "
                                         "give the other's); there are ", n));
    }
    if (n > secagg::kMaxSites) {
      return ConfigKeyError("secure_aggregation", absl::StrCat("takes at most ", secagg::kMaxSites, " sites; there are ", n));
    }
    if (secure_aggregation_threshold != 0) {
      RETURN_IF_ERROR(CheckConfigRange("secure_aggregation_threshold", secure_aggregation_threshold, 2, n));
    }
    RETURN_IF_ERROR(CheckConfigRange("secure_aggregation_fraction_bits", secure_aggregation_fraction_bits, 8, 40));
  }
  if (auto t = ParseTieBreak(tie_break); !t.ok()) return ConfigKeyError("tie_break", t.status().message());
  if (auto g = ParseSiteGroup(site_group); !g.ok()) return ConfigKeyError("site_group", g.status().message());
  if (auto p = ParseOutlierPolicy(outlier_policy); !p.ok()) {
    return ConfigKeyError("outlier_policy", p.status().message());
  }
  if (!(outlier_z_threshold >= 1.0 && outlier_z_threshold <= 100.0)) {
    return ConfigKeyError("outlier_z_threshold", absl::StrCat("value ", outlier_z_threshold, " is outside [1, 100]"));
  }
  if (!(outlier_min_gap >= 0.0 && outlier_min_gap <= 1.0)) {
    return ConfigKeyError("outlier_min_gap", absl::StrCat("value ", outlier_min_gap, " is outside [0, 1]"));
  }
  RETURN_IF_ERROR(CheckConfigRange("outlier_min_sites", outlier_min_sites, 3, 1000));
  RETURN_IF_ERROR(CheckConfigRange("join_timeout_seconds", join_timeout_seconds, 1, 86400));
  RETURN_IF_ERROR(CheckConfigRange("round_deadline_seconds", round_deadline_seconds, 10, 604800));
  RETURN_IF_ERROR(CheckConfigRange("max_round_extensions", max_round_extensions, 0, 100));
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

absl::StatusOr<OutlierOptions> ServerConfig::Outliers() const {
  OutlierOptions options;
  ASSIGN_OR_RETURN(options.policy, ParseOutlierPolicy(outlier_policy));
  options.z_threshold = outlier_z_threshold;
  options.min_gap = outlier_min_gap;
  options.min_sites = outlier_min_sites;
  return options;
}

std::vector<std::string> ServerConfigKeys() {
  ServerConfig scratch;
  std::vector<std::string> keys;
  for (const auto& [key, setter] : Setters(&scratch)) keys.push_back(key);
  return keys;
}

absl::StatusOr<ServerConfig> ParseServerConfig(const std::string& yaml_text, const std::string& source) {
  ServerConfig config;
  RETURN_IF_ERROR(ApplyYamlConfig(yaml_text, source, Setters(&config), "deploy/server.example.yaml"));
  if (absl::Status s = config.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", s.message()));
  }
  return config;
}

absl::StatusOr<ServerConfig> LoadServerConfig(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadConfigFile(path));
  return ParseServerConfig(text, path);
}

}  // namespace fedprllm
