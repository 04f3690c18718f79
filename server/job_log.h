// Per-job server logs: an spdlog sink, added to the default logger, that also appends every
// line logged while a job runs to that job's log file (jobs_dir/NAME/server.log), which the
// admin API's StreamJobLog serves. One job runs at a time, so "while it runs" is "its".
//
//   auto sink = JobLogSink::Install(std::move(formatter));   // MakeLogFormatter(), once
//   sink->Attach("/var/lib/fedprllm/jobs/nightly/server.log");
//   ... the job's lines ...
//   sink->Detach();
#pragma once

#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <spdlog/sinks/base_sink.h>

#include "absl/status/statusor.h"

namespace fedprllm {

class JobLogSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  // Adds a sink with `formatter` to the default logger.
  static std::shared_ptr<JobLogSink> Install(std::unique_ptr<spdlog::formatter> formatter);
  ~JobLogSink() override;

  // Lines from now on are appended to `path` too (created if missing). Replaces any earlier
  // file. A file that cannot be opened is logged once and skipped.
  void Attach(const std::string& path);
  void Detach();

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override;
  void flush_() override;

 private:
  std::FILE* file_ = nullptr;  // guarded by base_sink's mutex
};

// Where the next line of a log file starts: its number (0-based) and, once a read has found
// it, its byte offset, so that following a log reads only what was appended.
struct LogPosition {
  int64_t line = 0;
  int64_t offset = -1;  // unknown: the next read counts `line` lines from the start
};

// Up to `max_lines` lines from `*position` on, without their '\n', and moves `*position`
// past them; a last line without '\n' (being written) is left out. None at the end.
// NOT_FOUND if the file does not exist.
absl::StatusOr<std::vector<std::string>> ReadLogLines(const std::string& path, LogPosition* position,
                                                      int64_t max_lines);

}  // namespace fedprllm
