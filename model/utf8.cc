// UTF-8 validation, decoding and lossy conversion (model/utf8.h).
#include "model/utf8.h"

namespace fedprllm::internal {
namespace {

// For a lead byte, the length of its sequence and the range its second byte must fall in
// (Unicode Table 3-7, "Well-Formed UTF-8 Byte Sequences"). length 0: not a lead byte.
struct LeadInfo {
  int length;
  unsigned char second_min, second_max;
};

LeadInfo Lead(unsigned char b) {
  if (b < 0x80) return {1, 0, 0};
  if (b < 0xC2) return {0, 0, 0};
  if (b < 0xE0) return {2, 0x80, 0xBF};
  if (b == 0xE0) return {3, 0xA0, 0xBF};
  if (b == 0xED) return {3, 0x80, 0x9F};
  if (b < 0xF0) return {3, 0x80, 0xBF};
  if (b == 0xF0) return {4, 0x90, 0xBF};
  if (b < 0xF4) return {4, 0x80, 0xBF};
  if (b == 0xF4) return {4, 0x80, 0x8F};
  return {0, 0, 0};
}

// Number of bytes of a well-formed sequence at text[pos], or -(maximal ill-formed subpart
// length) when it is ill-formed (always at least 1 byte).
int SequenceAt(absl::string_view text, size_t pos) {
  const auto b0 = static_cast<unsigned char>(text[pos]);
  const LeadInfo lead = Lead(b0);
  if (lead.length == 0) return -1;
  if (lead.length == 1) return 1;
  size_t i = pos + 1;
  if (i >= text.size()) return -1;
  const auto b1 = static_cast<unsigned char>(text[i]);
  if (b1 < lead.second_min || b1 > lead.second_max) return -1;
  for (int k = 2; k < lead.length; ++k) {
    ++i;
    if (i >= text.size()) return -k;
    const auto b = static_cast<unsigned char>(text[i]);
    if (b < 0x80 || b > 0xBF) return -k;
  }
  return lead.length;
}

}  // namespace

bool IsValidUtf8(absl::string_view text, size_t* bad_offset) {
  size_t pos = 0;
  while (pos < text.size()) {
    if (static_cast<unsigned char>(text[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const int n = SequenceAt(text, pos);
    if (n < 0) {
      if (bad_offset != nullptr) *bad_offset = pos;
      return false;
    }
    pos += n;
  }
  return true;
}

char32_t DecodeUtf8At(absl::string_view text, size_t pos) {
  const auto b0 = static_cast<unsigned char>(text[pos]);
  if (b0 < 0x80) return b0;
  const size_t n = Utf8CharLength(text, pos);
  char32_t cp = b0 & (n == 2 ? 0x1F : n == 3 ? 0x0F : 0x07);
  for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(text[pos + k]) & 0x3F);
  return cp;
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool IsUnicodeWhitespace(char32_t cp) {
  switch (cp) {
    case 0x09:
    case 0x0A:
    case 0x0B:
    case 0x0C:
    case 0x0D:
    case 0x20:
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

std::string Utf8Lossy(absl::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t pos = 0;
  while (pos < bytes.size()) {
    const int n = SequenceAt(bytes, pos);
    if (n > 0) {
      out.append(bytes.data() + pos, n);
      pos += n;
    } else {
      out.append("\xEF\xBF\xBD");  // U+FFFD
      pos += -n;
    }
  }
  return out;
}

}  // namespace fedprllm::internal
