// The "text" pattern formatter and the "json" formatter (nlohmann::json does the escaping).
#include "common/logging.h"

#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "spdlog/pattern_formatter.h"
#include "spdlog/spdlog.h"

namespace fedprllm {
namespace {

// One JSON object per message, keys in a fixed order: time, level, program, msg.
class JsonLogFormatter : public spdlog::formatter {
 public:
  explicit JsonLogFormatter(std::string program) : program_(std::move(program)) {}

  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    nlohmann::ordered_json line;
    line["time"] = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromChrono(msg.time), absl::UTCTimeZone());
    const spdlog::string_view_t level = spdlog::level::to_string_view(msg.level);
    line["level"] = std::string(level.data(), level.size());
    line["program"] = program_;
    line["msg"] = std::string(msg.payload.data(), msg.payload.size());
    // replace: a byte that is not UTF-8 becomes U+FFFD instead of throwing from a log call.
    const std::string text = line.dump(-1, ' ', /*ensure_ascii=*/false, nlohmann::json::error_handler_t::replace);
    dest.append(text.data(), text.data() + text.size());
    dest.push_back('\n');
  }

  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonLogFormatter>(program_);
  }

 private:
  const std::string program_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<spdlog::formatter>> MakeLogFormatter(const std::string& program,
                                                                    const std::string& format) {
  if (format == "text") {
    // The program name is literal text in the pattern: a '%' in it must not start a flag.
    const std::string pattern =
        absl::StrCat("%Y-%m-%d %H:%M:%S.%e [%^%l%$] ", absl::StrReplaceAll(program, {{"%", "%%"}}), ": %v");
    return std::make_unique<spdlog::pattern_formatter>(pattern);
  }
  if (format == "json") return std::make_unique<JsonLogFormatter>(program);
  // Worded like config/yaml_config.h's ConfigKeyError (common cannot depend on config).
  return absl::InvalidArgumentError(
      absl::StrCat("config key 'log_format': \"", absl::CEscape(format), "\": expected text or json"));
}

absl::Status ConfigureLogging(const std::string& program, const std::string& format) {
  absl::StatusOr<std::unique_ptr<spdlog::formatter>> formatter = MakeLogFormatter(program, format);
  if (!formatter.ok()) return formatter.status();
  spdlog::set_formatter(std::move(formatter).value());
  return absl::OkStatus();
}

}  // namespace fedprllm
