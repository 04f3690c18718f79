// fedprllm-admin's YAML config: its key table and the checks of every value.
#include "admin/admin_config.h"

#include <map>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "config/yaml_config.h"

namespace fedprllm {
namespace {

std::map<std::string, YamlSetter> Setters(AdminConfig* c) {
  return {
      {"server_address", StoreIn(&c->server_address)},
      {"server_name", StoreIn(&c->server_name)},
      {"tls.cert", StoreIn(&c->tls.cert)},
      {"tls.key", StoreIn(&c->tls.key)},
      {"tls.ca", StoreIn(&c->tls.ca)},
      {"insecure", StoreIn(&c->insecure)},
  };
}

}  // namespace

absl::Status AdminConfig::Validate() const {
  const size_t colon = server_address.rfind(':');
  if (server_address.empty() || colon == std::string::npos || colon + 1 == server_address.size()) {
    return ConfigKeyError("server_address", absl::StrCat("\"", server_address, "\" is not host:port"));
  }
  if (!insecure) {
    RETURN_IF_ERROR(RequireTlsPaths(tls.cert, tls.key, tls.ca));
  }
  return absl::OkStatus();
}

absl::StatusOr<AdminConfig> ParseAdminConfig(const std::string& yaml_text, const std::string& source) {
  AdminConfig config;
  RETURN_IF_ERROR(ApplyYamlConfig(yaml_text, source, Setters(&config), "deploy/admin.example.yaml"));
  if (absl::Status s = config.Validate(); !s.ok())
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", s.message()));
  return config;
}

absl::StatusOr<AdminConfig> LoadAdminConfig(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadConfigFile(path));
  return ParseAdminConfig(text, path);
}

}  // namespace fedprllm
