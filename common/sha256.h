// SHA-256 digests as lower-case hex (OpenSSL's EVP), for content checks of state files and
// identifiers derived from content.
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace fedprllm {

std::string Sha256Hex(absl::string_view bytes);

}  // namespace fedprllm
