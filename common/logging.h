// How the daemons' log lines look: the human "text" lines operators read today, or "json",
// one JSON object per line for log collectors. Set once at startup, before any thread logs,
// from the config key log_format:
//
//   int main(int argc, char** argv) {
//     ...
//     absl::Status logging = fedprllm::ConfigureLogging("server", config.log_format);
//     if (!logging.ok()) { spdlog::error("{}", logging.message()); return 2; }
//
//   text: 2026-12-01 15:03:22.123 [info] server: round 3 closed
//         (local time, milliseconds; the level is coloured on a terminal)
//   json: {"time":"2026-12-01T14:03:22.123Z","level":"info","program":"server","msg":"round 3 closed"}
//         (UTC, milliseconds; msg is JSON-escaped: quotes, backslashes and control characters
//         as JSON escapes, bytes that are not UTF-8 as U+FFFD; the line never breaks)
//
// Levels are spdlog's names: trace, debug, info, warning, error, critical.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "spdlog/formatter.h"

namespace fedprllm {

// The formatter for `format` ("text" or "json"), with `program` (e.g. "server", "client")
// in every line. Owned by the caller; give it to a sink or logger with set_formatter.
// INVALID_ARGUMENT, naming config key 'log_format', for any other format.
absl::StatusOr<std::unique_ptr<spdlog::formatter>> MakeLogFormatter(const std::string& program,
                                                                    const std::string& format);

// Installs MakeLogFormatter(program, format) on every logger registered with spdlog (the
// default logger included) and on those registered later. Loggers built without spdlog's
// registry keep their own formatter. On error nothing changes.
absl::Status ConfigureLogging(const std::string& program, const std::string& format);

}  // namespace fedprllm
