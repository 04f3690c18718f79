// UTF-8 helpers for the tokenizer.json implementation (model/hf_tokenizer.h): strict
// validation, code point iteration, and the lossy decoding Rust's String::from_utf8_lossy does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace fedprllm::internal {

// True when `text` is well-formed UTF-8 as Rust's `str` requires: no overlong forms, no
// surrogates (U+D800..U+DFFF), nothing above U+10FFFF, no truncated sequence. When false and
// `bad_offset` is given, sets it to the byte offset of the first ill-formed sequence.
bool IsValidUtf8(absl::string_view text, size_t* bad_offset = nullptr);

// Length in bytes of the character that starts at `text[pos]`. Requires valid UTF-8 and
// pos < text.size().
inline size_t Utf8CharLength(absl::string_view text, size_t pos) {
  const auto lead = static_cast<unsigned char>(text[pos]);
  if (lead < 0x80) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  return 4;
}

// The code point that starts at `text[pos]`. Requires valid UTF-8 and pos < text.size().
char32_t DecodeUtf8At(absl::string_view text, size_t pos);

// Appends the UTF-8 encoding of `cp` (a Unicode scalar value) to *out.
void AppendUtf8(char32_t cp, std::string* out);

// Unicode White_Space, as Rust's char::is_whitespace.
bool IsUnicodeWhitespace(char32_t cp);

// `bytes` as UTF-8 with every maximal ill-formed subsequence replaced by U+FFFD, exactly as
// Rust's String::from_utf8_lossy (the Unicode "substitution of maximal subparts" practice).
std::string Utf8Lossy(absl::string_view bytes);

}  // namespace fedprllm::internal
