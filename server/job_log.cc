// The per-job log sink and the reader StreamJobLog serves from.
#include "server/job_log.h"

#include <spdlog/spdlog.h>

#include <fstream>

#include "absl/strings/str_cat.h"

namespace fedprllm {

std::shared_ptr<JobLogSink> JobLogSink::Install(std::unique_ptr<spdlog::formatter> formatter) {
  auto sink = std::make_shared<JobLogSink>();
  sink->set_formatter(std::move(formatter));
  spdlog::default_logger()->sinks().push_back(sink);
  return sink;
}

JobLogSink::~JobLogSink() {
  if (file_ != nullptr) std::fclose(file_);
}

void JobLogSink::Attach(const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "ab");
  if (file == nullptr) spdlog::warn("cannot open the job log {}; the job's lines go to the server log only", path);
  std::lock_guard<std::mutex> lock(mutex_);
  if (file_ != nullptr) std::fclose(file_);
  file_ = file;
}

void JobLogSink::Detach() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (file_ != nullptr) std::fclose(file_);
  file_ = nullptr;
}

void JobLogSink::sink_it_(const spdlog::details::log_msg& msg) {
  if (file_ == nullptr) return;
  spdlog::memory_buf_t formatted;
  formatter_->format(msg, formatted);
  std::fwrite(formatted.data(), 1, formatted.size(), file_);
  std::fflush(file_);
}

void JobLogSink::flush_() {
  if (file_ != nullptr) std::fflush(file_);
}

absl::StatusOr<std::vector<std::string>> ReadLogLines(const std::string& path, LogPosition* position,
                                                      int64_t max_lines) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("no log at ", path));
  std::string line;
  if (position->offset >= 0) {
    in.seekg(position->offset);
  } else {
    int64_t skipped = 0;
    std::streamoff offset = 0;
    while (skipped < position->line && std::getline(in, line) && !in.eof()) {
      ++skipped;
      offset = in.tellg();
    }
    if (skipped < position->line) return std::vector<std::string>();  // not written yet
    position->offset = offset;
    in.clear();
    in.seekg(offset);
  }
  std::vector<std::string> lines;
  while (static_cast<int64_t>(lines.size()) < max_lines && std::getline(in, line)) {
    if (in.eof()) break;  // no '\n' yet: still being written
    lines.push_back(std::move(line));
    position->offset = in.tellg();
    ++position->line;
  }
  return lines;
}

}  // namespace fedprllm
