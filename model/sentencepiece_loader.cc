// Finds and loads the sentencepiece module (see sentencepiece_adapter.h) with RTLD_DEEPBIND.
#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>

#include "model/sentencepiece_adapter.h"

namespace fedprllm::internal {
namespace {

using EntryPoint = SentencePieceAdapter* (*)(const std::string*, std::string*);

std::vector<std::string> CandidatePaths() {
  std::vector<std::string> paths;
  if (const char* env = std::getenv("FEDPRLLM_SENTENCEPIECE_MODULE"); env != nullptr && *env != '\0') {
    paths.push_back(env);
  }
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    paths.push_back((exe.parent_path() / kSentencePieceModuleName).string());
    // The installed layout (cmake --install, the .deb packages): PREFIX/bin/fedprllm-*
    // and PREFIX/lib/fedprllm/libfedprllm_sentencepiece.so.
    paths.push_back((exe.parent_path().parent_path() / kSentencePieceInstallDir / kSentencePieceModuleName).string());
  }
  paths.push_back(FEDPRLLM_SENTENCEPIECE_MODULE_PATH);
  return paths;
}

EntryPoint LoadEntryPoint(std::string* error) {
  static std::once_flag once;
  static EntryPoint entry = nullptr;
  static std::string load_error;
  std::call_once(once, [] {
    for (const std::string& path : CandidatePaths()) {
      if (!std::filesystem::exists(path)) continue;
      void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (handle == nullptr) {
        load_error = std::string("cannot load ") + path + ": " + ::dlerror();
        return;
      }
      entry = reinterpret_cast<EntryPoint>(::dlsym(handle, kSentencePieceEntryPoint));
      if (entry == nullptr) load_error = path + " lacks " + kSentencePieceEntryPoint;
      return;
    }
    load_error = std::string(kSentencePieceModuleName) +
                 " not found beside the executable, in ../" + kSentencePieceInstallDir +
                 " from it, or in the build tree; set FEDPRLLM_SENTENCEPIECE_MODULE";
  });
  if (entry == nullptr) *error = load_error;
  return entry;
}

}  // namespace

std::unique_ptr<SentencePieceAdapter> SentencePieceAdapter::Load(const std::string& path, std::string* error) {
  EntryPoint entry = LoadEntryPoint(error);
  if (entry == nullptr) return nullptr;
  return std::unique_ptr<SentencePieceAdapter>(entry(&path, error));
}

}  // namespace fedprllm::internal
