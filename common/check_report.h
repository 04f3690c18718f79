// The report of a daemon's preflight (`fedprllm-client check`, `fedprllm-server check`):
// one line per check, "ok   ", "warn ", "FAIL " or "skip " then "name: text", printed as
// each check finishes so that a slow one (a model load) shows where it is.
//
//   CheckReport report(stdout);
//   report.Ok("config", path);
//   report.Fail("certificate", status.message());
//   return report.passed() ? 0 : 1;
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace fedprllm {

enum class CheckResult {
  kOk,    // the check passed
  kWarn,  // it passed, but something needs the operator soon (a certificate about to expire)
  kFail,  // the daemon would not work: `check` exits non-zero
  kSkip,  // not run, because it needs something an earlier check found broken or unset
};

struct CheckLine {
  CheckResult result;
  std::string name;  // "config", "certificate", "model stories260K", ...
  std::string text;  // what was found, in words; one line (newlines are replaced)
};

// Not thread-safe: one preflight adds its lines in order.
class CheckReport {
 public:
  // Each line is written to `out` (when not null) as it is added, and flushed.
  explicit CheckReport(std::FILE* out = nullptr) : out_(out) {}

  void Add(CheckResult result, absl::string_view name, absl::string_view text);
  void Ok(absl::string_view name, absl::string_view text) { Add(CheckResult::kOk, name, text); }
  void Warn(absl::string_view name, absl::string_view text) { Add(CheckResult::kWarn, name, text); }
  void Fail(absl::string_view name, absl::string_view text) { Add(CheckResult::kFail, name, text); }
  void Skip(absl::string_view name, absl::string_view text) { Add(CheckResult::kSkip, name, text); }

  // True if no line is kFail (warnings and skips pass).
  bool passed() const;
  const std::vector<CheckLine>& lines() const { return lines_; }
  // The first line named `name`, or null.
  const CheckLine* Find(absl::string_view name) const;
  // Every line as printed, each ending in '\n'.
  std::string ToString() const;

  // "FAIL certificate: ..." for one line, without the newline.
  static std::string Format(const CheckLine& line);

 private:
  std::FILE* out_;
  std::vector<CheckLine> lines_;
};

}  // namespace fedprllm
