// The one wall between LibTorch exceptions and absl::Status for the model and engine
// libraries: every call into LibTorch that can throw on bad input goes through here.
#pragma once

#include <exception>
#include <string_view>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace fedprllm {

// Runs `fn` and converts a thrown c10::Error or std::exception into an InternalError
// whose message starts with `phase` (say what was being done and on which input).
// `fn` returns either void, absl::Status, or a value T (then TorchCall returns StatusOr<T>).
template <typename Fn>
auto TorchCall(absl::string_view phase, Fn&& fn) {
  using Result = std::invoke_result_t<Fn>;
  auto fail = [&](const char* what) {
    absl::string_view message(what);
    // LibTorch appends a C++ backtrace after the first line; keep operators' logs short.
    if (auto newline = message.find('\n'); newline != absl::string_view::npos) {
      message = message.substr(0, newline);
    }
    return absl::InternalError(absl::StrCat(phase, ": ", message));
  };
  if constexpr (std::is_void_v<Result>) {
    try {
      fn();
      return absl::OkStatus();
    } catch (const std::exception& e) {
      return fail(e.what());
    }
  } else if constexpr (std::is_same_v<Result, absl::Status>) {
    try {
      return fn();
    } catch (const std::exception& e) {
      return fail(e.what());
    }
  } else {
    try {
      return absl::StatusOr<Result>(fn());
    } catch (const std::exception& e) {
      return absl::StatusOr<Result>(fail(e.what()));
    }
  }
}

}  // namespace fedprllm
