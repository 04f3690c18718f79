// Scratch files and log silencing for the fuzz targets (fuzz/fuzz_support.h).
#include "fuzz/fuzz_support.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>

#include <spdlog/spdlog.h>

namespace fedprllm::fuzz {
namespace {

std::string ScratchBase(absl::string_view stem) {
  const char* tmp = std::getenv("TMPDIR");
  std::string base = (tmp != nullptr && *tmp != '\0') ? tmp : "/tmp";
  return base + "/fedprllm_fuzz_" + std::string(stem) + "_" + std::to_string(::getpid());
}

// Every scratch path made, removed at exit (a crash leaves them for the post-mortem).
std::map<std::string, bool>& ScratchPaths() {
  static auto* paths = new std::map<std::string, bool>;
  return *paths;
}

void RemoveScratchPaths() {
  std::error_code ec;
  for (const auto& [path, is_dir] : ScratchPaths()) std::filesystem::remove_all(path, ec);
}

void Remember(const std::string& path, bool is_dir) {
  if (ScratchPaths().empty()) std::atexit(RemoveScratchPaths);
  ScratchPaths()[path] = is_dir;
}

}  // namespace

const std::string& WriteScratchFile(absl::string_view stem, absl::string_view bytes) {
  static auto* paths = new std::map<std::string, std::string>;
  auto it = paths->find(std::string(stem));
  if (it == paths->end()) {
    it = paths->emplace(std::string(stem), ScratchBase(stem)).first;
    Remember(it->second, false);
  }
  std::FILE* f = std::fopen(it->second.c_str(), "wb");
  if (f == nullptr) {
    std::perror(it->second.c_str());
    std::abort();  // the harness, not the parser, is broken
  }
  if (!bytes.empty() && std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size()) std::abort();
  std::fclose(f);
  return it->second;
}

const std::string& ScratchDir(absl::string_view stem) {
  static auto* dirs = new std::map<std::string, std::string>;
  auto it = dirs->find(std::string(stem));
  if (it == dirs->end()) {
    it = dirs->emplace(std::string(stem), ScratchBase(stem)).first;
    std::error_code ec;
    std::filesystem::remove_all(it->second, ec);
    std::filesystem::create_directories(it->second);
    Remember(it->second, true);
  }
  return it->second;
}

const absl::Status& Report(absl::string_view what, const absl::Status& status) {
  static const bool verbose = std::getenv("FEDPRLLM_FUZZ_VERBOSE") != nullptr;
  if (verbose) {
    std::fprintf(stderr, "%.*s: %s\n", static_cast<int>(what.size()), what.data(),
                 status.ok() ? "OK" : std::string(status.message()).c_str());
  }
  return status;
}

void QuietLogs() {
  static const bool done = [] {
    spdlog::set_level(spdlog::level::off);
    return true;
  }();
  (void)done;
}

}  // namespace fedprllm::fuzz
