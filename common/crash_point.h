// Kill points for crash tests. With FEDPRLLM_CRASH_AT="NAME" (or "NAME#N") in the
// environment, the first (N-th) call of CrashPoint("NAME") kills the process with SIGKILL,
// exactly as an operator's `kill -9` would at that moment. Without the variable it does
// nothing; the names in use are listed in docs/round_protocol.md §6.
//
//   CrashPoint("commit-point");   // after the upload file, before round.json
#pragma once

#include "absl/strings/string_view.h"

namespace fedprllm {

void CrashPoint(absl::string_view name);

}  // namespace fedprllm
