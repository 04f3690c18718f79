// CheckReport: the preflight's lines, printed as they are added.
#include "common/check_report.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace fedprllm {

void CheckReport::Add(CheckResult result, absl::string_view name, absl::string_view text) {
  lines_.push_back(CheckLine{result, std::string(name), absl::StrReplaceAll(text, {{"\r", " "}, {"\n", " "}})});
  if (out_ != nullptr) {
    const std::string printed = Format(lines_.back()) + "\n";
    std::fputs(printed.c_str(), out_);
    std::fflush(out_);
  }
}

bool CheckReport::passed() const {
  for (const CheckLine& line : lines_) {
    if (line.result == CheckResult::kFail) return false;
  }
  return true;
}

const CheckLine* CheckReport::Find(absl::string_view name) const {
  for (const CheckLine& line : lines_) {
    if (line.name == name) return &line;
  }
  return nullptr;
}

std::string CheckReport::ToString() const {
  std::string out;
  for (const CheckLine& line : lines_) absl::StrAppend(&out, Format(line), "\n");
  return out;
}

std::string CheckReport::Format(const CheckLine& line) {
  const char* tag = "ok   ";
  switch (line.result) {
    case CheckResult::kOk:
      break;
    case CheckResult::kWarn:
      tag = "warn ";
      break;
    case CheckResult::kFail:
      tag = "FAIL ";
      break;
    case CheckResult::kSkip:
      tag = "skip ";
      break;
  }
  return absl::StrCat(tag, line.name, ": ", line.text);
}

}  // namespace fedprllm
