// UnicodeNormalizer over ICU's C++ API: Normalizer2::normalizeUTF8 works on UTF-8 directly;
// lowercasing goes one code point at a time through u_strToLower with the root locale.
#include "model/unicode_normalizer.h"

#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/stringpiece.h>
#include <unicode/ustring.h>
#include <unicode/utf16.h>
#include <unicode/utypes.h>

#include <cstdint>
#include <limits>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "model/utf8.h"

namespace fedprllm::internal {
namespace {

const char* FormName(UnicodeNormalizer::Form form) {
  switch (form) {
    case UnicodeNormalizer::Form::kNfc:
      return "NFC";
    case UnicodeNormalizer::Form::kNfd:
      return "NFD";
    case UnicodeNormalizer::Form::kNfkc:
      return "NFKC";
    case UnicodeNormalizer::Form::kNfkd:
      return "NFKD";
    case UnicodeNormalizer::Form::kLowercase:
      return "Lowercase";
  }
  return "?";
}

// ICU's shared instance for a normalization form (owned by ICU, never freed); nullptr for
// kLowercase. Sets *status on failure.
const icu::Normalizer2* Instance(UnicodeNormalizer::Form form, UErrorCode* status) {
  switch (form) {
    case UnicodeNormalizer::Form::kNfc:
      return icu::Normalizer2::getNFCInstance(*status);
    case UnicodeNormalizer::Form::kNfd:
      return icu::Normalizer2::getNFDInstance(*status);
    case UnicodeNormalizer::Form::kNfkc:
      return icu::Normalizer2::getNFKCInstance(*status);
    case UnicodeNormalizer::Form::kNfkd:
      return icu::Normalizer2::getNFKDInstance(*status);
    case UnicodeNormalizer::Form::kLowercase:
      return nullptr;
  }
  return nullptr;
}

absl::Status IcuError(UnicodeNormalizer::Form form, absl::string_view what, UErrorCode status) {
  return absl::InternalError(absl::StrCat("ICU ", FormName(form), " ", what, " failed: ", u_errorName(status)));
}

// The full lowercase mapping of one code point, appended to *out as UTF-8.
absl::Status AppendLowercase(char32_t cp, std::string* out) {
  UChar in[2];
  int32_t in_length = 0;
  U16_APPEND_UNSAFE(in, in_length, static_cast<UChar32>(cp));
  // No code point lowercases to more than 3 (SpecialCasing.txt); 8 leaves room.
  UChar lowered[8];
  UErrorCode status = U_ZERO_ERROR;
  // "" is ICU's root locale (no Turkish or Lithuanian rules); a lone code point has no
  // context, so no conditional mapping (final sigma) applies, as in Rust's char::to_lowercase.
  const int32_t length = u_strToLower(lowered, 8, in, in_length, "", &status);
  if (U_FAILURE(status) || length > 8) {
    return IcuError(UnicodeNormalizer::Form::kLowercase, "u_strToLower",
                    U_FAILURE(status) ? status : U_BUFFER_OVERFLOW_ERROR);
  }
  for (int32_t i = 0; i < length;) {
    UChar32 c;
    U16_NEXT(lowered, i, length, c);
    AppendUtf8(static_cast<char32_t>(c), out);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<UnicodeNormalizer> UnicodeNormalizer::Create(Form form) {
  if (form == Form::kLowercase) {
    std::string probe;
    if (absl::Status s = AppendLowercase(U'A', &probe); !s.ok()) return s;
    return UnicodeNormalizer(form);
  }
  UErrorCode status = U_ZERO_ERROR;
  if (Instance(form, &status) == nullptr || U_FAILURE(status)) return IcuError(form, "instance", status);
  return UnicodeNormalizer(form);
}

absl::Status UnicodeNormalizer::Apply(std::string* text) const {
  size_t bad = 0;
  if (!IsValidUtf8(*text, &bad)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Unicode ", FormName(form_), ": the text is not valid UTF-8 at byte ", bad));
  }
  if (text->size() >= static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return absl::OutOfRangeError(
        absl::StrCat("Unicode ", FormName(form_), ": ", text->size(), " bytes is more than ICU can take at once"));
  }
  if (form_ == Form::kLowercase) {
    std::string out;
    out.reserve(text->size());
    for (size_t pos = 0; pos < text->size();) {
      const auto c = static_cast<unsigned char>((*text)[pos]);
      if (c < 0x80) {
        out.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : static_cast<char>(c));
        ++pos;
        continue;
      }
      if (absl::Status s = AppendLowercase(DecodeUtf8At(*text, pos), &out); !s.ok()) return s;
      pos += Utf8CharLength(*text, pos);
    }
    *text = std::move(out);
    return absl::OkStatus();
  }
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* normalizer = Instance(form_, &status);
  if (normalizer == nullptr || U_FAILURE(status)) return IcuError(form_, "instance", status);
  const icu::StringPiece source(text->data(), static_cast<int32_t>(text->size()));
  // Most text is already normalized (NFC especially): the quick check saves the copy.
  if (normalizer->isNormalizedUTF8(source, status) && U_SUCCESS(status)) return absl::OkStatus();
  if (U_FAILURE(status)) return IcuError(form_, "isNormalizedUTF8", status);
  std::string out;
  out.reserve(text->size() + text->size() / 4);
  icu::StringByteSink<std::string> sink(&out);
  normalizer->normalizeUTF8(0, source, sink, nullptr, status);
  if (U_FAILURE(status)) return IcuError(form_, "normalizeUTF8", status);
  *text = std::move(out);
  return absl::OkStatus();
}

}  // namespace fedprllm::internal
