// SHA-256 digests as lower-case hex (OpenSSL's EVP), for content checks of state files and
// identifiers derived from content: in one call, or over bytes that arrive in pieces.
#pragma once

#include <memory>
#include <string>

#include "absl/strings/string_view.h"

namespace fedprllm {

std::string Sha256Hex(absl::string_view bytes);

// Incremental form: Update() any number of times, then FinishHex() once; the digest equals
// Sha256Hex of the concatenated bytes.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;
  void Update(absl::string_view bytes);
  std::string FinishHex();

 private:
  struct Context;
  std::unique_ptr<Context> context_;
};

}  // namespace fedprllm
