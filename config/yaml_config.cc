// The YAML config reader: key flattening, unknown-key errors with line numbers, and the
// yaml-cpp exception wall.
#include "config/yaml_config.h"

#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

namespace fedprllm {

absl::Status ApplyYamlConfig(const std::string& yaml_text, const std::string& source,
                             const std::map<std::string, YamlSetter>& setters, absl::string_view example_file) {
  std::string key = "(document)";
  int line = 0;
  try {
    const YAML::Node root = YAML::Load(yaml_text);
    if (!root.IsMap()) return absl::InvalidArgumentError(absl::StrCat(source, ": expected a mapping of keys"));
    std::vector<std::pair<std::string, YAML::Node>> entries;
    for (const auto& kv : root) {
      const std::string top = kv.first.as<std::string>();
      if (kv.second.IsMap() && setters.count(top) == 0) {
        for (const auto& sub : kv.second) entries.emplace_back(top + "." + sub.first.as<std::string>(), sub.second);
      } else {
        entries.emplace_back(top, kv.second);
      }
    }
    for (const auto& [name, node] : entries) {
      key = name;
      line = node.Mark().line + 1;
      auto setter = setters.find(name);
      if (setter == setters.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat(source, ":", line, ": unknown config key '", name, "' (see ", example_file, ")"));
      }
      if (!node.IsNull()) setter->second(node);
    }
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ":", e.mark.is_null() ? line : e.mark.line + 1, ": config key '", key, "': ", e.msg));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read config file ", path));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::Status ConfigKeyError(absl::string_view key, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("config key '", key, "': ", why));
}

absl::Status RequireConfigValue(absl::string_view key, const std::string& value, absl::string_view hint) {
  if (!value.empty()) return absl::OkStatus();
  return ConfigKeyError(key, hint.empty() ? "is required" : absl::StrCat("is required ", hint));
}

absl::Status RequireTlsPaths(const std::string& cert, const std::string& key, const std::string& ca) {
  const char* hint = "(or set insecure: true for a plaintext test)";
  if (absl::Status s = RequireConfigValue("tls.cert", cert, hint); !s.ok()) return s;
  if (absl::Status s = RequireConfigValue("tls.key", key, hint); !s.ok()) return s;
  return RequireConfigValue("tls.ca", ca, hint);
}

}  // namespace fedprllm
