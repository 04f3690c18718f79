// Finds and loads the sentencepiece module (see sentencepiece_adapter.h) with RTLD_DEEPBIND.
#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>

#include "common/sanitizer_build.h"
#include "model/sentencepiece_adapter.h"

// AddressSanitizer's dlopen interceptor kills the process when RTLD_DEEPBIND is asked for
// (google/sanitizers#611: a deep-bound library binds malloc, memcpy and the like to libc,
// past the interceptors). The module needs RTLD_DEEPBIND all the same, so a sanitized build
// (scripts/sanitize_check.sh, docs/sanitizers.md) calls libc's dlopen itself. Only
// libsentencepiece's own direct libc calls then go unchecked; its `new` still reaches ASan's
// malloc, through libstdc++'s operator new, so ASan records the block as malloc'ed while its
// `delete` reaches ASan's operator delete: the sanitized run needs
// ASAN_OPTIONS=alloc_dealloc_mismatch=0 (seen in absl::internal::RegisterFlag, called from
// libsentencepiece's own static initializers while this dlopen runs).
namespace fedprllm::internal {
namespace {

void* OpenDeepBound(const char* path) {
  constexpr int kFlags = RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND;
#ifdef FEDPRLLM_ASAN
  using DlopenFn = void* (*)(const char*, int);
  static const auto libc_dlopen = reinterpret_cast<DlopenFn>(::dlsym(RTLD_NEXT, "dlopen"));
  if (libc_dlopen != nullptr) return libc_dlopen(path, kFlags);
#endif
  return ::dlopen(path, kFlags);
}

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
      void* handle = OpenDeepBound(path.c_str());
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
