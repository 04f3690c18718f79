// Unicode normalization (NFC, NFD, NFKC, NFKD) and lowercasing of UTF-8 text over ICU
// (libicu-dev, icu-uc), for the tokenizer.json normalizers (model/hf_tokenizer.h).
//
//   ASSIGN_OR_RETURN(UnicodeNormalizer nfc, UnicodeNormalizer::Create(UnicodeNormalizer::Form::kNfc));
//   std::string text = "cafe\xCC\x81";  // "e" + U+0301 COMBINING ACUTE ACCENT
//   RETURN_IF_ERROR(nfc.Apply(&text));  // "caf\xC3\xA9", precomposed U+00E9
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fedprllm::internal {

class UnicodeNormalizer {
 public:
  enum class Form {
    kNfc,   // canonical decomposition, then canonical composition
    kNfd,   // canonical decomposition
    kNfkc,  // compatibility decomposition, then canonical composition ("\uFB01" -> "fi")
    kNfkd,  // compatibility decomposition
    // Each code point on its own to its full lowercase mapping, as Rust's char::to_lowercase
    // (tokenizers' Lowercase): no locale, no context, so a final capital sigma becomes U+03C3.
    kLowercase,
  };

  // Fails (kInternal, with ICU's error name) when ICU cannot provide the form, e.g. its data
  // library is missing; a normalizer that is created then only fails on bad input.
  static absl::StatusOr<UnicodeNormalizer> Create(Form form);

  // Replaces *text with its normalized form. Fails with kInvalidArgument, naming the byte
  // offset, when *text is not valid UTF-8, and with kOutOfRange when it is 2 GiB or more (ICU
  // counts in int32_t); *text is unchanged then. Thread-safe: ICU's instances are immutable.
  absl::Status Apply(std::string* text) const;

  Form form() const { return form_; }

 private:
  explicit UnicodeNormalizer(Form form) : form_(form) {}
  Form form_;
};

}  // namespace fedprllm::internal
