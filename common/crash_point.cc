// FEDPRLLM_CRASH_AT parsing and the counted SIGKILL.
#include "common/crash_point.h"

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/synchronization/mutex.h"

namespace fedprllm {
namespace {

struct Target {
  std::string name;  // empty: no kill point armed
  int occurrence = 1;
};

Target ParseTarget() {
  Target target;
  const char* env = std::getenv("FEDPRLLM_CRASH_AT");
  if (env == nullptr || *env == '\0') return target;
  const std::string text = env;
  const size_t hash = text.rfind('#');
  target.name = text.substr(0, hash);
  if (hash != std::string::npos && !absl::SimpleAtoi(text.substr(hash + 1), &target.occurrence)) {
    target.occurrence = 1;
  }
  return target;
}

}  // namespace

void CrashPoint(absl::string_view name) {
  static const Target target = ParseTarget();
  if (target.name.empty() || name != target.name) return;
  static absl::Mutex mu(absl::kConstInit);
  static int seen = 0;
  absl::MutexLock lock(&mu);
  if (++seen != target.occurrence) return;
  std::fprintf(stderr, "crash point %s#%d reached: SIGKILL\n", target.name.c_str(), seen);
  std::fflush(stderr);
  ::kill(::getpid(), SIGKILL);
  ::pause();
}

}  // namespace fedprllm
