// Regex over libpcre2-8: compile in UTF + UCP mode, JIT when available, and match iteration.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "model/pcre2_regex.h"

#include <pcre2.h>

#include "absl/strings/str_cat.h"

namespace fedprllm::internal {
namespace {

std::string Pcre2Message(int code) {
  PCRE2_UCHAR buffer[256];
  if (pcre2_get_error_message(code, buffer, sizeof(buffer)) < 0) return absl::StrCat("PCRE2 error ", code);
  return reinterpret_cast<const char*>(buffer);
}

struct MatchDataDeleter {
  void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
};

}  // namespace

void Regex::CodeDeleter::operator()(pcre2_real_code_8* code) const { pcre2_code_free(code); }

Regex::Regex(std::unique_ptr<pcre2_real_code_8, CodeDeleter> code, std::string pattern)
    : code_(std::move(code)), pattern_(std::move(pattern)) {}
Regex::Regex(Regex&&) noexcept = default;
Regex& Regex::operator=(Regex&&) noexcept = default;
Regex::~Regex() = default;

absl::StatusOr<Regex> Regex::Compile(absl::string_view pattern, bool literal) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  // PCRE2_LITERAL admits no UCP (it has no classes to make Unicode-aware).
  const uint32_t options = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options, &error, &offset, nullptr);
  if (code == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("regex /", pattern, "/ does not compile at offset ", offset, ": ", Pcre2Message(error)));
  }
  // JIT is a speed-up only: a PCRE2 built without it (or a pattern it cannot JIT) still matches.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  return Regex(std::unique_ptr<pcre2_real_code_8, CodeDeleter>(code), std::string(pattern));
}

absl::Status Regex::FindAll(absl::string_view text, std::vector<Range>* found) const {
  std::unique_ptr<pcre2_match_data, MatchDataDeleter> data(pcre2_match_data_create_from_pattern(code_.get(), nullptr));
  if (data == nullptr) return absl::ResourceExhaustedError("PCRE2 match data: out of memory");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t search_from = 0;
  bool have_previous = false;
  size_t previous_end = 0;
  while (search_from <= text.size()) {
    // The caller has checked the UTF-8 once; PCRE2 would otherwise re-check the rest of the
    // subject on every call, which is quadratic on a long segment.
    int rc = pcre2_match(code_.get(), subject, text.size(), search_from, PCRE2_NO_UTF_CHECK, data.get(), nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      // The interpreter keeps its backtracking frames on the heap: retry this one match there.
      rc = pcre2_match(code_.get(), subject, text.size(), search_from, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, data.get(),
                       nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      return absl::ResourceExhaustedError(
          absl::StrCat("regex /", pattern_, "/ failed at byte ", search_from, ": ", Pcre2Message(rc)));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data.get());
    const size_t begin = ovector[0], end = ovector[1];
    if (begin == end && have_previous && previous_end == end) {
      // Rust's rule: no empty match right after the previous match; step one character on.
      if (search_from >= text.size()) break;
      const auto lead = static_cast<unsigned char>(text[search_from]);
      search_from += lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
      continue;
    }
    found->emplace_back(begin, end);
    have_previous = true;
    previous_end = end;
    search_from = end;
    if (begin == end && end >= text.size()) break;
  }
  return absl::OkStatus();
}

}  // namespace fedprllm::internal
