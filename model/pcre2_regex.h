// A compiled PCRE2 regular expression in UTF + UCP mode (\s, \w, \d and \p{..} are Unicode
// aware), for the tokenizer.json pre-tokenizers and Replace steps (model/hf_tokenizer.h).
//
//   ASSIGN_OR_RETURN(Regex re, Regex::Compile(R"( ?\p{L}+|\s+(?!\S))"));
//   std::vector<Regex::Range> found;
//   RETURN_IF_ERROR(re.FindAll(text, &found));
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

struct pcre2_real_code_8;  // pcre2.h's pcre2_code (8-bit code units)

namespace fedprllm::internal {

class Regex {
 public:
  // [begin, end) byte offsets into the searched text.
  using Range = std::pair<size_t, size_t>;

  // Compiles `pattern` (PCRE2 syntax, which covers the Oniguruma subset tokenizer.json files
  // use: \p{L}, \p{N}, (?i:...), lookahead). With `literal`, the pattern is a plain string.
  // Fails, quoting PCRE2's message and offset, on a pattern PCRE2 rejects.
  static absl::StatusOr<Regex> Compile(absl::string_view pattern, bool literal = false);
  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;
  ~Regex();

  // Appends to *found the successive non-overlapping matches in `text`, left to right, with
  // the rule Rust's regex and onig iterators use: an empty match that ends where the previous
  // match ended is skipped. Requires valid UTF-8 (checked by the caller, not here). Fails only
  // when PCRE2 gives up (its match or depth limit on a pathological input).
  // Thread-safe: each call has its own match data.
  absl::Status FindAll(absl::string_view text, std::vector<Range>* found) const;

  const std::string& pattern() const { return pattern_; }

 private:
  struct CodeDeleter {
    void operator()(pcre2_real_code_8* code) const;
  };
  Regex(std::unique_ptr<pcre2_real_code_8, CodeDeleter> code, std::string pattern);
  std::unique_ptr<pcre2_real_code_8, CodeDeleter> code_;
  std::string pattern_;
};

}  // namespace fedprllm::internal
