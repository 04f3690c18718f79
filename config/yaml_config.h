// Reads a daemon's YAML config into its struct through a table of keys: one nested level is
// flattened ("tls: {cert: x}" is key "tls.cert") unless the table has a setter for the
// mapping's own key (that setter gets the whole mapping, e.g. for a std::map field); an
// unknown key is refused with file and line, and yaml-cpp's conversion exceptions stop here.
// Also the value checks the config structs share, all phrased "config key 'k': why".
//
//   ServerConfig c;
//   RETURN_IF_ERROR(ApplyYamlConfig(text, path, {{"model", YamlSetter(&c.model)}, ...},
//                                   "deploy/server.example.yaml"));
#pragma once

#include <yaml-cpp/yaml.h>

#include <functional>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace fedprllm {

// Stores one YAML value; may throw YAML::Exception on a bad conversion (ApplyYamlConfig
// catches it).
using YamlSetter = std::function<void(const YAML::Node&)>;

// A setter that converts the value to T and stores it in *field.
template <typename T>
YamlSetter StoreIn(T* field) {
  return [field](const YAML::Node& node) { *field = node.as<T>(); };
}

// Parses `yaml_text` (a mapping) and calls setters.at(key) for every key whose value is not
// null. Errors (INVALID_ARGUMENT, prefixed "source:line: "): not a mapping, unknown key
// (naming `example_file` for the list of keys), bad value.
absl::Status ApplyYamlConfig(const std::string& yaml_text, const std::string& source,
                             const std::map<std::string, YamlSetter>& setters, absl::string_view example_file);

// The whole file as text; NOT_FOUND if it cannot be read.
absl::StatusOr<std::string> ReadConfigFile(const std::string& path);

// INVALID_ARGUMENT "config key 'key': why".
absl::Status ConfigKeyError(absl::string_view key, absl::string_view why);

// ConfigKeyError unless lo <= value <= hi.
template <typename T>
absl::Status CheckConfigRange(absl::string_view key, T value, T lo, T hi) {
  if (!(value >= lo && value <= hi)) {
    return ConfigKeyError(key, absl::StrCat("value ", value, " is outside [", lo, ", ", hi, "]"));
  }
  return absl::OkStatus();
}

// ConfigKeyError("... is required", plus `hint` when given) if value is empty.
absl::Status RequireConfigValue(absl::string_view key, const std::string& value, absl::string_view hint = "");

// OK if tls.cert, tls.key and tls.ca are all set; else names the first that is missing
// ("config key 'tls.cert': is required (or set insecure: true for a plaintext test)").
absl::Status RequireTlsPaths(const std::string& cert, const std::string& key, const std::string& ca);

}  // namespace fedprllm
