// A narrow facade over libsentencepiece, implemented in a separate shared module.
// Debian's libsentencepiece carries its own protobuf 3.14 runtime and its own
// `absl::string_view`; both clash with the protobuf and abseil that LibTorch and gRPC
// use. The module (sentencepiece_module/) is therefore loaded with dlopen(RTLD_DEEPBIND)
// so it binds to its own copies, and this interface uses standard types alone.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace fedprllm::internal {

class SentencePieceAdapter {
 public:
  // Loads the module on first use, then the model at `path`. Returns nullptr and sets
  // *error when either fails. The module is found through $FEDPRLLM_SENTENCEPIECE_MODULE,
  // then beside the running executable, then in ../lib/fedprllm from the executable's
  // folder (the installed layout), then in the build tree.
  static std::unique_ptr<SentencePieceAdapter> Load(const std::string& path, std::string* error);
  virtual ~SentencePieceAdapter() = default;
  // Each returns false and sets *error on failure.
  virtual bool Encode(const std::string& text, std::vector<int>* ids, std::string* error) const = 0;
  virtual bool Decode(const std::vector<int>& ids, std::string* text, std::string* error) const = 0;
  virtual int vocab_size() const = 0;
  virtual int bos_id() const = 0;  // -1 when the model has none
  virtual int eos_id() const = 0;  // -1 when the model has none
};

// Name of the module's entry point: SentencePieceAdapter* (const std::string* path, std::string* error).
inline constexpr char kSentencePieceEntryPoint[] = "fedprllm_sentencepiece_load";
inline constexpr char kSentencePieceModuleName[] = "libfedprllm_sentencepiece.so";
// Where `cmake --install` puts the module, relative to the install prefix (the binaries are
// in PREFIX/bin); the top-level CMakeLists.txt installs it there.
inline constexpr char kSentencePieceInstallDir[] = "lib/fedprllm";

}  // namespace fedprllm::internal
