// HfTokenizer: tokenizer.json parsing (one exception wall around nlohmann json) and the
// encode pipeline of Hugging Face tokenizers: added tokens -> normalizer -> pre-tokenizer ->
// BPE -> post-processor; and the decoder chain.
#include "model/hf_tokenizer.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <exception>
#include <filesystem>
#include <fstream>
#include <new>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "model/bpe_model.h"
#include "model/pcre2_regex.h"
#include "model/unicode_normalizer.h"
#include "model/utf8.h"

namespace fedprllm {
namespace {

namespace fs = std::filesystem;
using internal::BpeModel;
using internal::BpeOptions;
using internal::Regex;
using internal::UnicodeNormalizer;
using json = nlohmann::json;

// Token ids above this are refused: no real vocabulary comes near, and vocab_size() must stay
// a sane number on a corrupt file.
constexpr int64_t kMaxTokenId = (int64_t{1} << 24) - 1;
// Files larger than this are refused before reading (the largest real tokenizer.json files
// are around 35 MB).
constexpr uintmax_t kMaxFileBytes = uintmax_t{1} << 30;
// Words up to this many bytes are cached within one Encode call (byte-level text repeats words).
constexpr size_t kMaxCachedWordBytes = 128;

// The GPT-2 pre-tokenizer pattern, used by ByteLevel when use_regex is true.
constexpr char kGpt2Pattern[] = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// ---------------------------------------------------------------------------------------
// Reading typed values, with errors that name the file and the key.

class Reader {
 public:
  explicit Reader(std::string file) : file_(std::move(file)) {}
  const std::string& file() const { return file_; }

  absl::Status Bad(const std::string& key, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(file_, ": ", key, ": ", what));
  }
  absl::Status Unsupported(const std::string& key, absl::string_view what) const {
    return absl::UnimplementedError(absl::StrCat(file_, ": ", key, ": ", what, " (docs/tokenizers.md lists what is)"));
  }

  // `obj[key]`, or nullptr when `obj` is not an object or the key is absent or null.
  static const json* Find(const json& obj, const std::string& key) {
    if (!obj.is_object()) return nullptr;
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return nullptr;
    return &*it;
  }
  // Each of these reads `obj[key]`; `path` names it in messages.
  absl::StatusOr<const json*> Object(const json& obj, const std::string& key, const std::string& path) const {
    const json* v = Find(obj, key);
    if (v == nullptr) return Bad(path, "missing");
    if (!v->is_object()) return Bad(path, "not an object");
    return v;
  }
  absl::StatusOr<const json*> Array(const json& obj, const std::string& key, const std::string& path) const {
    const json* v = Find(obj, key);
    if (v == nullptr) return Bad(path, "missing");
    if (!v->is_array()) return Bad(path, "not an array");
    return v;
  }
  absl::StatusOr<std::string> String(const json& obj, const std::string& key, const std::string& path) const {
    const json* v = Find(obj, key);
    if (v == nullptr) return Bad(path, "missing");
    if (!v->is_string()) return Bad(path, "not a string");
    return v->get<std::string>();
  }
  absl::StatusOr<std::string> StringOr(const json& obj, const std::string& key, const std::string& path,
                                       std::string fallback) const {
    const json* v = Find(obj, key);
    if (v == nullptr) return fallback;
    if (!v->is_string()) return Bad(path, "not a string");
    return v->get<std::string>();
  }
  absl::StatusOr<bool> BoolOr(const json& obj, const std::string& key, const std::string& path, bool fallback) const {
    const json* v = Find(obj, key);
    if (v == nullptr) return fallback;
    if (!v->is_boolean()) return Bad(path, "not true or false");
    return v->get<bool>();
  }
  absl::StatusOr<int64_t> IntOr(const json& obj, const std::string& key, const std::string& path, int64_t fallback,
                                int64_t min, int64_t max) const {
    const json* v = Find(obj, key);
    if (v == nullptr) return fallback;
    return Int(*v, path, min, max);
  }
  absl::StatusOr<int64_t> Int(const json& v, const std::string& path, int64_t min, int64_t max) const {
    if (!v.is_number_integer()) return Bad(path, "not an integer");
    if (v.is_number_unsigned() ? v.get<uint64_t>() > static_cast<uint64_t>(max) : v.get<int64_t>() > max) {
      return Bad(path, absl::StrCat(v.dump(), " is above ", max));
    }
    const int64_t value = v.is_number_unsigned() ? static_cast<int64_t>(v.get<uint64_t>()) : v.get<int64_t>();
    if (value < min) return Bad(path, absl::StrCat(value, " is below ", min));
    return value;
  }
  absl::StatusOr<int> TokenId(const json& v, const std::string& path) const {
    ASSIGN_OR_RETURN(int64_t id, Int(v, path, 0, kMaxTokenId));
    return static_cast<int>(id);
  }
  // A single Unicode character given as a string (Metaspace replacement, Strip content).
  absl::StatusOr<char32_t> Char(const json& obj, const std::string& key, const std::string& path,
                                char32_t fallback) const {
    const json* v = Find(obj, key);
    if (v == nullptr) return fallback;
    if (!v->is_string()) return Bad(path, "not a string");
    const std::string s = v->get<std::string>();
    if (s.empty() || !internal::IsValidUtf8(s) || internal::Utf8CharLength(s, 0) != s.size()) {
      return Bad(path, absl::StrCat("\"", s, "\" is not exactly one character"));
    }
    return internal::DecodeUtf8At(s, 0);
  }
  absl::StatusOr<std::string> Type(const json& obj, const std::string& path) const {
    return String(obj, "type", path + ".type");
  }

 private:
  std::string file_;
};

std::string Utf8Of(char32_t cp) {
  std::string s;
  internal::AppendUtf8(cp, &s);
  return s;
}

// A {"String": s} or {"Regex": r} pattern object, as a compiled Regex (a String literally).
// `empty_literal` is set for {"String": ""}, which tokenizers' Split treats as "no match".
absl::StatusOr<Regex> ReadPattern(const Reader& r, const json& obj, const std::string& path, bool* empty_literal) {
  ASSIGN_OR_RETURN(const json* pattern, r.Object(obj, "pattern", path + ".pattern"));
  if (const json* s = Reader::Find(*pattern, "String")) {
    if (!s->is_string()) return r.Bad(path + ".pattern.String", "not a string");
    const std::string text = s->get<std::string>();
    if (empty_literal != nullptr) *empty_literal = text.empty();
    auto re = Regex::Compile(text, /*literal=*/true);
    if (!re.ok()) return r.Bad(path + ".pattern.String", re.status().message());
    return re;
  }
  if (const json* s = Reader::Find(*pattern, "Regex")) {
    if (!s->is_string()) return r.Bad(path + ".pattern.Regex", "not a string");
    if (empty_literal != nullptr) *empty_literal = false;
    auto re = Regex::Compile(s->get<std::string>());
    if (!re.ok()) return r.Bad(path + ".pattern.Regex", re.status().message());
    return re;
  }
  return r.Bad(path + ".pattern", "has neither \"String\" nor \"Regex\"");
}

// Replaces every match of `re` in *text with `content`.
absl::Status ReplaceAll(const Regex& re, absl::string_view content, std::string* text) {
  std::vector<Regex::Range> found;
  RETURN_IF_ERROR(re.FindAll(*text, &found));
  if (found.empty()) return absl::OkStatus();
  std::string out;
  out.reserve(text->size());
  size_t last = 0;
  for (const auto& [begin, end] : found) {
    out.append(*text, last, begin - last);
    out.append(content.data(), content.size());
    last = end;
  }
  out.append(*text, last, std::string::npos);
  *text = std::move(out);
  return absl::OkStatus();
}

// Start of the character that ends just before `pos` (> 0) in valid UTF-8.
size_t PreviousCharStart(absl::string_view text, size_t pos) {
  size_t b = pos - 1;
  while (b > 0 && (static_cast<unsigned char>(text[b]) & 0xC0) == 0x80) --b;
  return b;
}

// ---------------------------------------------------------------------------------------
// Components.

struct NormalizerStep {
  enum class Kind { kPrepend, kReplace, kStrip, kUnicode } kind;
  std::string text;                          // kPrepend: the prefix; kReplace: the replacement
  std::optional<Regex> pattern;              // kReplace
  std::optional<UnicodeNormalizer> unicode;  // kUnicode: NFC, NFD, NFKC, NFKD or Lowercase
  bool strip_left = false, strip_right = false;
};

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct PreTokenizerStep {
  enum class Kind { kSplit, kByteLevel, kMetaspace } kind;
  // kSplit (Split, Digits): the delimiter; kByteLevel: the GPT-2 pattern when use_regex;
  // kMetaspace: the replacement character when split.
  std::optional<Regex> regex;
  bool empty_literal = false;  // a Split on {"String": ""}: nothing is split
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  bool add_prefix_space = false;  // kByteLevel
  std::string replacement;        // kMetaspace
  enum class Prepend { kAlways, kFirst, kNever } prepend = Prepend::kAlways;
};

struct DecoderStep {
  enum class Kind { kByteLevel, kMetaspace, kReplace, kByteFallback, kFuse, kStrip, kBpeSuffix } kind;
  std::optional<Regex> pattern;  // kReplace
  std::string text;              // kReplace: replacement; kMetaspace: replacement char; kBpeSuffix: suffix
  char32_t strip_char = U' ';
  int64_t strip_start = 0, strip_stop = 0;
  bool metaspace_prepends = true;
};

struct AddedToken {
  int id = 0;
  std::string content;
  bool single_word = false, lstrip = false, rstrip = false, normalized = false, special = false;
};

// A piece of the text on its way through the pipeline: either an added token already
// recognised (token >= 0) or text for the pre-tokenizer and model.
struct Piece {
  std::string text;
  bool at_start = false;  // begins at offset 0 of the input (Metaspace prepend_scheme "first")
  int token = -1;
};

// Finds added tokens in text with tokenizers' AddedVocabulary::find_matches semantics:
// leftmost-longest non-overlapping matches (its Aho-Corasick automaton), then the
// single_word / lstrip / rstrip rules of each token.
class AddedTokenMatcher {
 public:
  struct Match {
    int token;  // index into the tokens, -1 for text between tokens
    size_t begin, end;
  };

  // `patterns[i]` is what token `index[i]` (an index into the tokens) is matched as.
  void Build(std::vector<std::string> patterns, std::vector<int> index) {
    patterns_ = std::move(patterns);
    index_ = std::move(index);
    for (auto& bucket : by_first_byte_) bucket.clear();
    for (size_t i = 0; i < patterns_.size(); ++i) {
      if (patterns_[i].empty()) continue;
      by_first_byte_[static_cast<unsigned char>(patterns_[i][0])].push_back(static_cast<int>(i));
    }
    for (auto& bucket : by_first_byte_) {
      std::stable_sort(bucket.begin(), bucket.end(),
                       [this](int a, int b) { return patterns_[a].size() > patterns_[b].size(); });
    }
  }

  // Appends to *out the ranges, in order and covering `text`, of the tokens found and of the
  // text between them. `word_char` tests Rust's is_alphanumeric() || '_' (single_word tokens).
  void Split(absl::string_view text, const std::vector<AddedToken>& tokens, const Regex* word_char,
             std::vector<Match>* out) const {
    size_t emitted = 0;  // start_offset in tokenizers
    size_t pos = 0;
    while (pos < text.size()) {
      int found = -1;
      for (int p : by_first_byte_[static_cast<unsigned char>(text[pos])]) {
        if (text.substr(pos, patterns_[p].size()) == patterns_[p]) {
          found = p;
          break;
        }
      }
      if (found < 0) {
        ++pos;
        continue;
      }
      size_t start = pos, stop = pos + patterns_[found].size();
      pos = stop;  // the automaton resumes after the match, whatever is done with it
      const AddedToken& token = tokens[index_[found]];
      if (token.single_word) {
        const bool space_before = start == 0 || !IsWordChar(text, PreviousCharStart(text, start), word_char);
        const bool space_after = stop == text.size() || !IsWordChar(text, stop, word_char);
        if (!space_before || !space_after) continue;
      }
      if (token.lstrip) {
        size_t s = start;
        while (s > 0) {
          const size_t b = PreviousCharStart(text, s);
          if (!internal::IsUnicodeWhitespace(internal::DecodeUtf8At(text, b))) break;
          s = b;
        }
        start = std::max(s, emitted);
      }
      if (token.rstrip) {
        while (stop < text.size() && internal::IsUnicodeWhitespace(internal::DecodeUtf8At(text, stop))) {
          stop += internal::Utf8CharLength(text, stop);
        }
      }
      // A match inside text an earlier rstrip already took (a token that starts with
      // whitespace): tokenizers would emit overlapping ranges; it is dropped here instead.
      if (start < emitted) continue;
      if (emitted < start) out->push_back(Match{-1, emitted, start});
      out->push_back(Match{index_[found], start, stop});
      emitted = stop;
      pos = std::max(pos, stop);
    }
    if (emitted < text.size()) out->push_back(Match{-1, emitted, text.size()});
  }

 private:
  static bool IsWordChar(absl::string_view text, size_t char_start, const Regex* word_char) {
    std::vector<Regex::Range> found;
    const absl::string_view c = text.substr(char_start, internal::Utf8CharLength(text, char_start));
    return word_char != nullptr && word_char->FindAll(c, &found).ok() && !found.empty();
  }

  std::vector<std::string> patterns_;
  std::vector<int> index_;
  std::array<std::vector<int>, 256> by_first_byte_;
};

// GPT-2's bytes_to_unicode(): each byte as a printable character.
std::array<char32_t, 256> BytesToUnicode() {
  std::array<char32_t, 256> table{};
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    table[b] = printable ? static_cast<char32_t>(b) : next++;
  }
  return table;
}

// (range, is_match) pairs covering `size` bytes, from the matches found in it.
std::vector<std::pair<Regex::Range, bool>> Cover(size_t size, const std::vector<Regex::Range>& found) {
  if (size == 0) return {{{0, 0}, false}};
  std::vector<std::pair<Regex::Range, bool>> out;
  size_t prev = 0;
  for (const auto& [begin, end] : found) {
    if (prev != begin) out.push_back({{prev, begin}, false});
    out.push_back({{begin, end}, true});
    prev = end;
  }
  if (prev != size) out.push_back({{prev, size}, false});
  return out;
}

// tokenizers' NormalizedString::split: the ranges to keep under `behavior`.
std::vector<Regex::Range> ApplyBehavior(std::vector<std::pair<Regex::Range, bool>> matches, SplitBehavior behavior) {
  std::vector<Regex::Range> keep;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const auto& m : matches) keep.push_back(m.first);
      break;
    case SplitBehavior::kRemoved:
      for (const auto& m : matches) {
        if (!m.second) keep.push_back(m.first);
      }
      break;
    case SplitBehavior::kContiguous: {
      bool previous = false;
      for (const auto& [range, is_match] : matches) {
        if (is_match == previous && !keep.empty()) {
          keep.back().second = range.second;
        } else {
          keep.push_back(range);
        }
        previous = is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithPrevious: {
      bool previous = false;
      for (const auto& [range, is_match] : matches) {
        if (is_match && !previous && !keep.empty()) {
          keep.back().second = range.second;
        } else {
          keep.push_back(range);
        }
        previous = is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool previous = false;
      for (auto it = matches.rbegin(); it != matches.rend(); ++it) {
        const auto& [range, is_match] = *it;
        if (is_match && !previous && !keep.empty()) {
          keep.back().first = range.first;
        } else {
          keep.push_back(range);
        }
        previous = is_match;
      }
      std::reverse(keep.begin(), keep.end());
      break;
    }
  }
  return keep;
}

// ---------------------------------------------------------------------------------------
// Parsing the components.

absl::Status ParseNormalizer(const Reader& r, const json& node, const std::string& path,
                             std::vector<NormalizerStep>* steps) {
  if (!node.is_object()) return r.Bad(path, "not an object");
  ASSIGN_OR_RETURN(const std::string type, r.Type(node, path));
  if (type == "Sequence") {
    ASSIGN_OR_RETURN(const json* list, r.Array(node, "normalizers", path + ".normalizers"));
    for (size_t i = 0; i < list->size(); ++i) {
      RETURN_IF_ERROR(ParseNormalizer(r, (*list)[i], absl::StrCat(path, ".normalizers[", i, "]"), steps));
    }
    return absl::OkStatus();
  }
  NormalizerStep step;
  if (type == "Prepend") {
    step.kind = NormalizerStep::Kind::kPrepend;
    ASSIGN_OR_RETURN(step.text, r.String(node, "prepend", path + ".prepend"));
  } else if (type == "Replace") {
    step.kind = NormalizerStep::Kind::kReplace;
    ASSIGN_OR_RETURN(step.pattern, ReadPattern(r, node, path, nullptr));
    ASSIGN_OR_RETURN(step.text, r.String(node, "content", path + ".content"));
  } else if (type == "Strip") {
    step.kind = NormalizerStep::Kind::kStrip;
    ASSIGN_OR_RETURN(step.strip_left, r.BoolOr(node, "strip_left", path + ".strip_left", true));
    ASSIGN_OR_RETURN(step.strip_right, r.BoolOr(node, "strip_right", path + ".strip_right", true));
  } else if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD" || type == "Lowercase") {
    using Form = UnicodeNormalizer::Form;
    const Form form = type == "NFC"    ? Form::kNfc
                      : type == "NFD"  ? Form::kNfd
                      : type == "NFKC" ? Form::kNfkc
                      : type == "NFKD" ? Form::kNfkd
                                       : Form::kLowercase;
    step.kind = NormalizerStep::Kind::kUnicode;
    auto unicode = UnicodeNormalizer::Create(form);
    if (!unicode.ok()) return r.Bad(path + ".type", unicode.status().message());
    step.unicode.emplace(*std::move(unicode));
  } else {
    return r.Unsupported(path + ".type", absl::StrCat("normalizer \"", type,
                                                      "\" is not supported (supported: Sequence, Prepend, Replace, "
                                                      "Strip, NFC, NFD, NFKC, NFKD, Lowercase)"));
  }
  steps->push_back(std::move(step));
  return absl::OkStatus();
}

absl::StatusOr<PreTokenizerStep::Prepend> ReadPrependScheme(const Reader& r, const json& node,
                                                            const std::string& path) {
  ASSIGN_OR_RETURN(const std::string scheme, r.StringOr(node, "prepend_scheme", path + ".prepend_scheme", "always"));
  PreTokenizerStep::Prepend prepend;
  if (scheme == "always") {
    prepend = PreTokenizerStep::Prepend::kAlways;
  } else if (scheme == "first") {
    prepend = PreTokenizerStep::Prepend::kFirst;
  } else if (scheme == "never") {
    prepend = PreTokenizerStep::Prepend::kNever;
  } else {
    return r.Bad(path + ".prepend_scheme", absl::StrCat("\"", scheme, "\" is not always, first or never"));
  }
  // Older files carry add_prefix_space instead of (or beside) prepend_scheme; false wins.
  if (const json* legacy = Reader::Find(node, "add_prefix_space")) {
    if (!legacy->is_boolean()) return r.Bad(path + ".add_prefix_space", "not true or false");
    if (!legacy->get<bool>()) prepend = PreTokenizerStep::Prepend::kNever;
  }
  return prepend;
}

absl::Status ParsePreTokenizer(const Reader& r, const json& node, const std::string& path,
                               std::vector<PreTokenizerStep>* steps) {
  if (!node.is_object()) return r.Bad(path, "not an object");
  ASSIGN_OR_RETURN(const std::string type, r.Type(node, path));
  if (type == "Sequence") {
    ASSIGN_OR_RETURN(const json* list, r.Array(node, "pretokenizers", path + ".pretokenizers"));
    for (size_t i = 0; i < list->size(); ++i) {
      RETURN_IF_ERROR(ParsePreTokenizer(r, (*list)[i], absl::StrCat(path, ".pretokenizers[", i, "]"), steps));
    }
    return absl::OkStatus();
  }
  PreTokenizerStep step;
  if (type == "ByteLevel") {
    step.kind = PreTokenizerStep::Kind::kByteLevel;
    ASSIGN_OR_RETURN(step.add_prefix_space, r.BoolOr(node, "add_prefix_space", path + ".add_prefix_space", true));
    ASSIGN_OR_RETURN(const bool use_regex, r.BoolOr(node, "use_regex", path + ".use_regex", true));
    if (use_regex) {
      auto re = Regex::Compile(kGpt2Pattern);
      if (!re.ok()) return r.Bad(path, re.status().message());
      step.regex = *std::move(re);
    }
  } else if (type == "Split") {
    step.kind = PreTokenizerStep::Kind::kSplit;
    ASSIGN_OR_RETURN(step.regex, ReadPattern(r, node, path, &step.empty_literal));
    ASSIGN_OR_RETURN(const std::string behavior, r.String(node, "behavior", path + ".behavior"));
    if (behavior == "Removed") {
      step.behavior = SplitBehavior::kRemoved;
    } else if (behavior == "Isolated") {
      step.behavior = SplitBehavior::kIsolated;
    } else if (behavior == "MergedWithPrevious") {
      step.behavior = SplitBehavior::kMergedWithPrevious;
    } else if (behavior == "MergedWithNext") {
      step.behavior = SplitBehavior::kMergedWithNext;
    } else if (behavior == "Contiguous") {
      step.behavior = SplitBehavior::kContiguous;
    } else {
      return r.Bad(path + ".behavior", absl::StrCat("\"", behavior, "\" is not a split behavior"));
    }
    ASSIGN_OR_RETURN(step.invert, r.BoolOr(node, "invert", path + ".invert", false));
  } else if (type == "Digits") {
    // Digits is a split on Rust's char::is_numeric (\p{N}), one character per match.
    step.kind = PreTokenizerStep::Kind::kSplit;
    ASSIGN_OR_RETURN(const bool individual, r.BoolOr(node, "individual_digits", path + ".individual_digits", false));
    auto re = Regex::Compile(R"(\p{N})");
    if (!re.ok()) return r.Bad(path, re.status().message());
    step.regex = *std::move(re);
    step.behavior = individual ? SplitBehavior::kIsolated : SplitBehavior::kContiguous;
  } else if (type == "Metaspace") {
    step.kind = PreTokenizerStep::Kind::kMetaspace;
    ASSIGN_OR_RETURN(const char32_t replacement, r.Char(node, "replacement", path + ".replacement", U'\u2581'));
    step.replacement = Utf8Of(replacement);
    ASSIGN_OR_RETURN(step.prepend, ReadPrependScheme(r, node, path));
    ASSIGN_OR_RETURN(const bool split, r.BoolOr(node, "split", path + ".split", true));
    if (split) {
      auto re = Regex::Compile(step.replacement, /*literal=*/true);
      if (!re.ok()) return r.Bad(path + ".replacement", re.status().message());
      step.regex = *std::move(re);
      step.behavior = SplitBehavior::kMergedWithNext;
    }
  } else {
    return r.Unsupported(
        path + ".type", absl::StrCat("pre-tokenizer \"", type,
                                     "\" is not supported (supported: Sequence, Split, ByteLevel, Digits, Metaspace)"));
  }
  steps->push_back(std::move(step));
  return absl::OkStatus();
}

// Looks a named special token up in the TemplateProcessing "special_tokens" map.
absl::StatusOr<std::vector<int>> TemplateTokenIds(const Reader& r, const json& node, const std::string& name,
                                                  const std::string& path) {
  ASSIGN_OR_RETURN(const json* specials, r.Object(node, "special_tokens", path + ".special_tokens"));
  const json* entry = Reader::Find(*specials, name);
  if (entry == nullptr) return r.Bad(path + ".special_tokens", absl::StrCat("\"", name, "\" is used but not defined"));
  const std::string entry_path = absl::StrCat(path, ".special_tokens[\"", name, "\"]");
  ASSIGN_OR_RETURN(const json* ids, r.Array(*entry, "ids", entry_path + ".ids"));
  std::vector<int> out;
  for (size_t i = 0; i < ids->size(); ++i) {
    ASSIGN_OR_RETURN(int id, r.TokenId((*ids)[i], absl::StrCat(entry_path, ".ids[", i, "]")));
    out.push_back(id);
  }
  return out;
}

// The special tokens a post-processor adds around one sequence (add_special_tokens=true).
absl::Status ParsePostProcessor(const Reader& r, const json& node, const std::string& path, std::vector<int>* prefix,
                                std::vector<int>* suffix) {
  if (!node.is_object()) return r.Bad(path, "not an object");
  ASSIGN_OR_RETURN(const std::string type, r.Type(node, path));
  if (type == "ByteLevel") return absl::OkStatus();  // adjusts offsets only
  if (type == "Sequence") {
    // Each processor wraps what the previous one produced.
    ASSIGN_OR_RETURN(const json* list, r.Array(node, "processors", path + ".processors"));
    for (size_t i = 0; i < list->size(); ++i) {
      std::vector<int> p, s;
      RETURN_IF_ERROR(ParsePostProcessor(r, (*list)[i], absl::StrCat(path, ".processors[", i, "]"), &p, &s));
      prefix->insert(prefix->begin(), p.begin(), p.end());
      suffix->insert(suffix->end(), s.begin(), s.end());
    }
    return absl::OkStatus();
  }
  if (type == "TemplateProcessing") {
    ASSIGN_OR_RETURN(const json* single, r.Array(node, "single", path + ".single"));
    int sequences = 0;
    for (size_t i = 0; i < single->size(); ++i) {
      const json& piece = (*single)[i];
      const std::string piece_path = absl::StrCat(path, ".single[", i, "]");
      std::string special;
      bool is_sequence = false;
      if (piece.is_string()) {
        // The string form: "$A", "$A:0", "<s>", "<s>:1".
        std::string s = piece.get<std::string>();
        if (auto colon = s.rfind(':'); colon != std::string::npos && colon > 0) s.resize(colon);
        is_sequence = !s.empty() && s[0] == '$';
        special = s;
      } else if (const json* seq = Reader::Find(piece, "Sequence")) {
        ASSIGN_OR_RETURN(const std::string id, r.String(*seq, "id", piece_path + ".Sequence.id"));
        if (id != "A") return r.Bad(piece_path + ".Sequence.id", absl::StrCat("\"", id, "\" in a single template"));
        is_sequence = true;
      } else if (const json* tok = Reader::Find(piece, "SpecialToken")) {
        ASSIGN_OR_RETURN(special, r.String(*tok, "id", piece_path + ".SpecialToken.id"));
      } else {
        return r.Bad(piece_path, "neither a Sequence nor a SpecialToken");
      }
      if (is_sequence) {
        ++sequences;
        continue;
      }
      ASSIGN_OR_RETURN(std::vector<int> ids, TemplateTokenIds(r, node, special, path));
      std::vector<int>* side = sequences == 0 ? prefix : suffix;
      side->insert(side->end(), ids.begin(), ids.end());
    }
    if (sequences != 1) return r.Bad(path + ".single", "must hold the sequence $A exactly once");
    return absl::OkStatus();
  }
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    // "cls": ["<s>", 0], "sep": ["</s>", 2]: cls $A sep.
    for (const std::string key : {"cls", "sep"}) {
      ASSIGN_OR_RETURN(const json* pair, r.Array(node, key, absl::StrCat(path, ".", key)));
      if (pair->size() != 2) return r.Bad(absl::StrCat(path, ".", key), "is not [token, id]");
      ASSIGN_OR_RETURN(int id, r.TokenId((*pair)[1], absl::StrCat(path, ".", key, "[1]")));
      (key == "cls" ? prefix : suffix)->push_back(id);
    }
    return absl::OkStatus();
  }
  return r.Unsupported(path + ".type",
                       absl::StrCat("post-processor \"", type,
                                    "\" is not supported (supported: TemplateProcessing, ByteLevel, RobertaProcessing, "
                                    "BertProcessing, Sequence)"));
}

absl::Status ParseDecoder(const Reader& r, const json& node, const std::string& path, std::vector<DecoderStep>* steps) {
  if (!node.is_object()) return r.Bad(path, "not an object");
  ASSIGN_OR_RETURN(const std::string type, r.Type(node, path));
  if (type == "Sequence") {
    ASSIGN_OR_RETURN(const json* list, r.Array(node, "decoders", path + ".decoders"));
    for (size_t i = 0; i < list->size(); ++i) {
      RETURN_IF_ERROR(ParseDecoder(r, (*list)[i], absl::StrCat(path, ".decoders[", i, "]"), steps));
    }
    return absl::OkStatus();
  }
  DecoderStep step;
  if (type == "ByteLevel") {
    step.kind = DecoderStep::Kind::kByteLevel;
  } else if (type == "Metaspace") {
    step.kind = DecoderStep::Kind::kMetaspace;
    ASSIGN_OR_RETURN(const char32_t replacement, r.Char(node, "replacement", path + ".replacement", U'\u2581'));
    step.text = Utf8Of(replacement);
    ASSIGN_OR_RETURN(const PreTokenizerStep::Prepend prepend, ReadPrependScheme(r, node, path));
    step.metaspace_prepends = prepend != PreTokenizerStep::Prepend::kNever;
  } else if (type == "Replace") {
    step.kind = DecoderStep::Kind::kReplace;
    ASSIGN_OR_RETURN(step.pattern, ReadPattern(r, node, path, nullptr));
    ASSIGN_OR_RETURN(step.text, r.String(node, "content", path + ".content"));
  } else if (type == "ByteFallback") {
    step.kind = DecoderStep::Kind::kByteFallback;
  } else if (type == "Fuse") {
    step.kind = DecoderStep::Kind::kFuse;
  } else if (type == "Strip") {
    step.kind = DecoderStep::Kind::kStrip;
    ASSIGN_OR_RETURN(step.strip_char, r.Char(node, "content", path + ".content", U' '));
    ASSIGN_OR_RETURN(step.strip_start, r.IntOr(node, "start", path + ".start", 0, 0, kMaxTokenId));
    ASSIGN_OR_RETURN(step.strip_stop, r.IntOr(node, "stop", path + ".stop", 0, 0, kMaxTokenId));
  } else if (type == "BPEDecoder") {
    step.kind = DecoderStep::Kind::kBpeSuffix;
    ASSIGN_OR_RETURN(step.text, r.StringOr(node, "suffix", path + ".suffix", "</w>"));
  } else {
    return r.Unsupported(path + ".type",
                         absl::StrCat("decoder \"", type,
                                      "\" is not supported (supported: Sequence, ByteLevel, Metaspace, Replace, "
                                      "ByteFallback, Fuse, Strip, BPEDecoder)"));
  }
  steps->push_back(std::move(step));
  return absl::OkStatus();
}

// The file's bytes. With `exists` given, a missing file is not an error: *exists is set false
// and "" returned.
absl::StatusOr<std::string> ReadFile(const std::string& path, bool* exists) {
  std::error_code ec;
  if (exists != nullptr) {
    *exists = fs::exists(path, ec);
    if (!*exists) return std::string();
  }
  const uintmax_t size = fs::file_size(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat("cannot read ", path, ": ", ec.message()));
  if (size > kMaxFileBytes) return absl::InvalidArgumentError(absl::StrCat(path, ": ", size, " bytes is too large"));
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read ", path));
  return std::move(buffer).str();
}

// A bos_token / eos_token setting in tokenizer_config.json or special_tokens_map.json.
struct TokenSetting {
  bool present = false;                // the key is there
  std::optional<std::string> content;  // nullopt: the key is null (no such token)
  std::string file;                    // where it came from, for messages
};

absl::StatusOr<TokenSetting> ReadTokenSetting(const Reader& r, const json& root, const std::string& key) {
  TokenSetting setting;
  setting.file = r.file();
  if (!root.is_object()) return setting;
  auto it = root.find(key);
  if (it == root.end()) return setting;
  setting.present = true;
  if (it->is_null()) return setting;
  if (it->is_string()) {
    setting.content = it->get<std::string>();
    return setting;
  }
  if (it->is_object()) {
    ASSIGN_OR_RETURN(setting.content, r.String(*it, "content", key + ".content"));
    return setting;
  }
  return r.Bad(key, "neither a string nor an object with \"content\"");
}

}  // namespace

// ---------------------------------------------------------------------------------------

struct HfTokenizer::Impl {
  std::string name;
  std::optional<BpeModel> model;
  std::vector<AddedToken> added;
  AddedTokenMatcher raw_matcher;         // added tokens with normalized=false, on the raw text
  AddedTokenMatcher normalized_matcher;  // normalized=true, on the normalized text
  std::optional<Regex> word_char;        // for single_word tokens
  std::vector<NormalizerStep> normalizer;
  std::vector<PreTokenizerStep> pre_tokenizer;
  std::vector<DecoderStep> decoder;
  bool has_decoder = false;
  std::vector<int> prefix, suffix;
  int bos = -1, eos = -1;
  int vocab_size = 0;
  // Model vocabulary by id (a map: ids need not be dense).
  absl::flat_hash_map<int, std::string> id_to_token;
  absl::flat_hash_map<int, int> added_by_id;  // id -> index into `added`
  absl::flat_hash_map<std::string, int> added_by_content;
  std::array<std::string, 256> byte_chars;            // ByteLevel: byte -> its character, UTF-8
  absl::flat_hash_map<char32_t, uint8_t> char_bytes;  // ByteLevel decoder: the inverse

  absl::Status Normalize(std::string* text) const;
  absl::Status PreTokenize(std::vector<Piece>* pieces) const;
  absl::Status Decode(std::vector<std::string> tokens, std::string* out) const;
  std::optional<int> TokenToId(absl::string_view token) const {
    if (auto it = added_by_content.find(token); it != added_by_content.end()) return it->second;
    return model->TokenToId(token);
  }
};

absl::Status HfTokenizer::Impl::Normalize(std::string* text) const {
  for (const NormalizerStep& step : normalizer) {
    switch (step.kind) {
      case NormalizerStep::Kind::kPrepend:
        if (!text->empty()) text->insert(0, step.text);
        break;
      case NormalizerStep::Kind::kReplace:
        RETURN_IF_ERROR(ReplaceAll(*step.pattern, step.text, text));
        break;
      case NormalizerStep::Kind::kStrip: {
        size_t begin = 0, end = text->size();
        if (step.strip_left) {
          while (begin < end && internal::IsUnicodeWhitespace(internal::DecodeUtf8At(*text, begin))) {
            begin += internal::Utf8CharLength(*text, begin);
          }
        }
        if (step.strip_right) {
          while (end > begin) {
            const size_t b = PreviousCharStart(*text, end);
            if (b < begin || !internal::IsUnicodeWhitespace(internal::DecodeUtf8At(*text, b))) break;
            end = b;
          }
        }
        *text = text->substr(begin, end - begin);
        break;
      }
      case NormalizerStep::Kind::kUnicode:
        RETURN_IF_ERROR(step.unicode->Apply(text));
        break;
    }
  }
  return absl::OkStatus();
}

absl::Status HfTokenizer::Impl::PreTokenize(std::vector<Piece>* pieces) const {
  std::vector<Piece> next;
  std::vector<Regex::Range> found;
  // Splits `piece` at the matches of `step.regex` and appends the kept, non-empty parts.
  auto split = [&](const PreTokenizerStep& step, const Piece& piece) -> absl::Status {
    found.clear();
    if (!step.empty_literal) RETURN_IF_ERROR(step.regex->FindAll(piece.text, &found));
    auto cover = Cover(piece.text.size(), found);
    if (step.invert) {
      for (auto& m : cover) m.second = !m.second;
    }
    for (const auto& [begin, end] : ApplyBehavior(std::move(cover), step.behavior)) {
      if (begin == end) continue;
      next.push_back(Piece{piece.text.substr(begin, end - begin), piece.at_start && begin == 0, -1});
    }
    return absl::OkStatus();
  };
  for (const PreTokenizerStep& step : pre_tokenizer) {
    next.clear();
    next.reserve(pieces->size());
    for (Piece& piece : *pieces) {
      if (piece.token >= 0) {
        next.push_back(std::move(piece));
        continue;
      }
      switch (step.kind) {
        case PreTokenizerStep::Kind::kSplit:
          RETURN_IF_ERROR(split(step, piece));
          break;
        case PreTokenizerStep::Kind::kByteLevel: {
          if (step.add_prefix_space && (piece.text.empty() || piece.text[0] != ' ')) piece.text.insert(0, " ");
          const size_t first = next.size();
          if (step.regex.has_value()) {
            RETURN_IF_ERROR(split(step, piece));
          } else if (!piece.text.empty()) {
            next.push_back(std::move(piece));
          }
          for (size_t i = first; i < next.size(); ++i) {
            std::string mapped;
            mapped.reserve(next[i].text.size() * 2);
            for (char c : next[i].text) mapped.append(byte_chars[static_cast<unsigned char>(c)]);
            next[i].text = std::move(mapped);
          }
          break;
        }
        case PreTokenizerStep::Kind::kMetaspace: {
          if (piece.text.find(' ') != std::string::npos) {
            std::string replaced;
            replaced.reserve(piece.text.size() + piece.text.size() / 2);
            for (char c : piece.text) {
              if (c == ' ') {
                replaced.append(step.replacement);
              } else {
                replaced.push_back(c);
              }
            }
            piece.text = std::move(replaced);
          }
          const bool starts = absl::string_view(piece.text).substr(0, step.replacement.size()) == step.replacement;
          if (!starts && (step.prepend == PreTokenizerStep::Prepend::kAlways ||
                          (step.prepend == PreTokenizerStep::Prepend::kFirst && piece.at_start))) {
            piece.text.insert(0, step.replacement);
          }
          if (step.regex.has_value()) {
            RETURN_IF_ERROR(split(step, piece));
          } else if (!piece.text.empty()) {
            next.push_back(std::move(piece));
          }
          break;
        }
      }
    }
    pieces->swap(next);
  }
  return absl::OkStatus();
}

absl::Status HfTokenizer::Impl::Decode(std::vector<std::string> tokens, std::string* out) const {
  if (!has_decoder) {
    *out = absl::StrJoin(tokens, " ");
    return absl::OkStatus();
  }
  for (const DecoderStep& step : decoder) {
    switch (step.kind) {
      case DecoderStep::Kind::kByteLevel: {
        // Each token's characters back to bytes (a token with a character outside the table,
        // such as an added token, as its own bytes), then lossy UTF-8.
        std::string bytes;
        for (const std::string& token : tokens) {
          std::string mapped;
          bool all = true;
          for (size_t pos = 0; pos < token.size() && all; pos += internal::Utf8CharLength(token, pos)) {
            auto it = char_bytes.find(internal::DecodeUtf8At(token, pos));
            if (it == char_bytes.end()) {
              all = false;
            } else {
              mapped.push_back(static_cast<char>(it->second));
            }
          }
          bytes.append(all ? mapped : token);
        }
        tokens.assign(1, internal::Utf8Lossy(bytes));
        break;
      }
      case DecoderStep::Kind::kMetaspace:
        for (size_t i = 0; i < tokens.size(); ++i) {
          std::string replaced;
          const std::string& token = tokens[i];
          for (size_t pos = 0; pos < token.size();) {
            const size_t len = internal::Utf8CharLength(token, pos);
            if (token.compare(pos, len, step.text) == 0) {
              if (!(i == 0 && step.metaspace_prepends)) replaced.push_back(' ');
            } else {
              replaced.append(token, pos, len);
            }
            pos += len;
          }
          tokens[i] = std::move(replaced);
        }
        break;
      case DecoderStep::Kind::kReplace:
        for (std::string& token : tokens) RETURN_IF_ERROR(ReplaceAll(*step.pattern, step.text, &token));
        break;
      case DecoderStep::Kind::kByteFallback: {
        std::vector<std::string> result;
        std::string pending;  // bytes of consecutive <0xXX> tokens
        size_t pending_count = 0;
        auto flush = [&] {
          if (pending_count == 0) return;
          if (internal::IsValidUtf8(pending)) {
            result.push_back(pending);
          } else {
            for (size_t k = 0; k < pending_count; ++k) result.emplace_back("\xEF\xBF\xBD");
          }
          pending.clear();
          pending_count = 0;
        };
        auto hex = [](char c) -> int {
          if (c >= '0' && c <= '9') return c - '0';
          if (c >= 'a' && c <= 'f') return c - 'a' + 10;
          if (c >= 'A' && c <= 'F') return c - 'A' + 10;
          return -1;
        };
        for (std::string& token : tokens) {
          if (token.size() == 6 && token.compare(0, 3, "<0x") == 0 && token[5] == '>' && hex(token[3]) >= 0 &&
              hex(token[4]) >= 0) {
            pending.push_back(static_cast<char>(hex(token[3]) * 16 + hex(token[4])));
            ++pending_count;
          } else {
            flush();
            result.push_back(std::move(token));
          }
        }
        flush();
        tokens = std::move(result);
        break;
      }
      case DecoderStep::Kind::kFuse:
        tokens.assign(1, absl::StrJoin(tokens, ""));
        break;
      case DecoderStep::Kind::kStrip:
        for (std::string& token : tokens) {
          std::vector<size_t> starts;  // byte offset of each character
          for (size_t pos = 0; pos < token.size(); pos += internal::Utf8CharLength(token, pos)) starts.push_back(pos);
          size_t cut_begin = 0, cut_end = starts.size();  // in characters
          while (cut_begin < static_cast<size_t>(step.strip_start) && cut_begin < starts.size() &&
                 internal::DecodeUtf8At(token, starts[cut_begin]) == step.strip_char) {
            ++cut_begin;
          }
          for (int64_t k = 0; k < step.strip_stop && cut_end > cut_begin; ++k) {
            if (internal::DecodeUtf8At(token, starts[cut_end - 1]) != step.strip_char) break;
            --cut_end;
          }
          const size_t b = cut_begin < starts.size() ? starts[cut_begin] : token.size();
          const size_t e = cut_end < starts.size() ? starts[cut_end] : token.size();
          token = token.substr(b, e - b);
        }
        break;
      case DecoderStep::Kind::kBpeSuffix:
        for (size_t i = 0; i < tokens.size(); ++i) {
          std::string& token = tokens[i];
          const std::string replacement = i + 1 == tokens.size() ? "" : " ";
          for (size_t pos = 0; !step.text.empty() && (pos = token.find(step.text, pos)) != std::string::npos;) {
            token.replace(pos, step.text.size(), replacement);
            pos += replacement.size();
          }
        }
        break;
    }
  }
  *out = absl::StrJoin(tokens, "");
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------

namespace {

// Builds the tokenizer from parsed JSON. `config` / `map` (tokenizer_config.json,
// special_tokens_map.json) may be null. May throw nlohmann::json exceptions on a shape the
// explicit checks missed; FromJson is the wall that catches them.
absl::StatusOr<std::unique_ptr<HfTokenizer::Impl>> Build(const Reader& r, const json& root, const Reader& config_reader,
                                                         const json* config, const Reader& map_reader,
                                                         const json* map) {
  auto impl = std::make_unique<HfTokenizer::Impl>();
  impl->name = r.file();
  if (!root.is_object()) return r.Bad("(top level)", "not a JSON object");

  // --- model
  ASSIGN_OR_RETURN(const json* model, r.Object(root, "model", "model"));
  std::string type;
  if (Reader::Find(*model, "type") != nullptr) {
    ASSIGN_OR_RETURN(type, r.Type(*model, "model"));
  } else if (Reader::Find(*model, "merges") != nullptr) {
    type = "BPE";  // the older format without "type"
  } else {
    return r.Bad("model.type", "missing, and the model has no merges");
  }
  if (type != "BPE") {
    return r.Unsupported("model.type", absl::StrCat("model type \"", type, "\" is not supported; only BPE is"));
  }
  if (const json* dropout = Reader::Find(*model, "dropout")) {
    if (!dropout->is_number() || dropout->get<double>() != 0.0) {
      return r.Unsupported("model.dropout", absl::StrCat(dropout->dump(), ": BPE dropout is not supported"));
    }
  }
  ASSIGN_OR_RETURN(const json* vocab_json, r.Object(*model, "vocab", "model.vocab"));
  absl::flat_hash_map<std::string, int> vocab;
  vocab.reserve(vocab_json->size());
  int max_id = -1;
  for (auto it = vocab_json->begin(); it != vocab_json->end(); ++it) {
    ASSIGN_OR_RETURN(int id, r.TokenId(it.value(), absl::StrCat("model.vocab[\"", it.key(), "\"]")));
    vocab.emplace(it.key(), id);
    max_id = std::max(max_id, id);
  }
  ASSIGN_OR_RETURN(const json* merges_json, r.Array(*model, "merges", "model.merges"));
  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(merges_json->size());
  for (size_t i = 0; i < merges_json->size(); ++i) {
    const json& m = (*merges_json)[i];
    const std::string path = absl::StrCat("model.merges[", i, "]");
    if (m.is_string()) {
      // "a b": exactly one space, as tokenizers requires.
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        return r.Bad(path, absl::StrCat("\"", s, "\" is not two tokens separated by one space"));
      }
      merges.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      return r.Bad(path, "neither \"a b\" nor [\"a\", \"b\"]");
    }
  }
  BpeOptions options;
  if (const json* unk = Reader::Find(*model, "unk_token")) {
    if (!unk->is_string()) return r.Bad("model.unk_token", "not a string");
    options.unk_token = unk->get<std::string>();
  }
  ASSIGN_OR_RETURN(options.continuing_subword_prefix,
                   r.StringOr(*model, "continuing_subword_prefix", "model.continuing_subword_prefix", ""));
  ASSIGN_OR_RETURN(options.end_of_word_suffix,
                   r.StringOr(*model, "end_of_word_suffix", "model.end_of_word_suffix", ""));
  ASSIGN_OR_RETURN(options.fuse_unk, r.BoolOr(*model, "fuse_unk", "model.fuse_unk", false));
  ASSIGN_OR_RETURN(options.byte_fallback, r.BoolOr(*model, "byte_fallback", "model.byte_fallback", false));
  ASSIGN_OR_RETURN(options.ignore_merges, r.BoolOr(*model, "ignore_merges", "model.ignore_merges", false));
  impl->id_to_token.reserve(vocab.size());
  for (const auto& [token, id] : vocab) impl->id_to_token.emplace(id, token);
  auto bpe = BpeModel::Create(std::move(vocab), merges, std::move(options));
  // The message names the merge by index (tokenizers: "Merges text file invalid at line N+1").
  if (!bpe.ok()) return r.Bad("model", bpe.status().message());
  impl->model.emplace(*std::move(bpe));

  // --- normalizer, pre-tokenizer, post-processor, decoder
  if (const json* n = Reader::Find(root, "normalizer")) {
    RETURN_IF_ERROR(ParseNormalizer(r, *n, "normalizer", &impl->normalizer));
  }
  if (const json* p = Reader::Find(root, "pre_tokenizer")) {
    RETURN_IF_ERROR(ParsePreTokenizer(r, *p, "pre_tokenizer", &impl->pre_tokenizer));
  }
  if (const json* p = Reader::Find(root, "post_processor")) {
    RETURN_IF_ERROR(ParsePostProcessor(r, *p, "post_processor", &impl->prefix, &impl->suffix));
  }
  if (const json* d = Reader::Find(root, "decoder")) {
    impl->has_decoder = true;
    RETURN_IF_ERROR(ParseDecoder(r, *d, "decoder", &impl->decoder));
  }
  const std::array<char32_t, 256> table = BytesToUnicode();
  for (int b = 0; b < 256; ++b) {
    impl->byte_chars[b] = Utf8Of(table[b]);
    impl->char_bytes[table[b]] = static_cast<uint8_t>(b);
  }

  // --- added tokens
  if (const json* list = Reader::Find(root, "added_tokens")) {
    if (!list->is_array()) return r.Bad("added_tokens", "not an array");
    for (size_t i = 0; i < list->size(); ++i) {
      const json& t = (*list)[i];
      const std::string path = absl::StrCat("added_tokens[", i, "]");
      if (!t.is_object()) return r.Bad(path, "not an object");
      AddedToken token;
      const json* id = Reader::Find(t, "id");
      if (id == nullptr) return r.Bad(path + ".id", "missing");
      ASSIGN_OR_RETURN(token.id, r.TokenId(*id, path + ".id"));
      ASSIGN_OR_RETURN(token.content, r.String(t, "content", path + ".content"));
      if (token.content.empty()) return r.Bad(path + ".content", "empty");
      ASSIGN_OR_RETURN(token.special, r.BoolOr(t, "special", path + ".special", false));
      ASSIGN_OR_RETURN(token.single_word, r.BoolOr(t, "single_word", path + ".single_word", false));
      ASSIGN_OR_RETURN(token.lstrip, r.BoolOr(t, "lstrip", path + ".lstrip", false));
      ASSIGN_OR_RETURN(token.rstrip, r.BoolOr(t, "rstrip", path + ".rstrip", false));
      ASSIGN_OR_RETURN(token.normalized, r.BoolOr(t, "normalized", path + ".normalized", !token.special));
      if (impl->added_by_id.contains(token.id)) return r.Bad(path + ".id", absl::StrCat(token.id, " is used twice"));
      impl->added_by_id[token.id] = static_cast<int>(impl->added.size());
      impl->added_by_content.emplace(token.content, token.id);
      max_id = std::max(max_id, token.id);
      impl->added.push_back(std::move(token));
    }
  }
  impl->vocab_size = max_id + 1;
  std::vector<std::string> raw_patterns, normalized_patterns;
  std::vector<int> raw_index, normalized_index;
  bool single_word = false;
  for (size_t i = 0; i < impl->added.size(); ++i) {
    const AddedToken& token = impl->added[i];
    single_word = single_word || token.single_word;
    if (token.normalized) {
      std::string pattern = token.content;  // matched in normalized text, so normalized too
      if (absl::Status s = impl->Normalize(&pattern); !s.ok()) {
        return r.Bad(absl::StrCat("added_tokens[", i, "].content"), s.message());
      }
      normalized_patterns.push_back(std::move(pattern));
      normalized_index.push_back(static_cast<int>(i));
    } else {
      raw_patterns.push_back(token.content);
      raw_index.push_back(static_cast<int>(i));
    }
  }
  impl->raw_matcher.Build(std::move(raw_patterns), std::move(raw_index));
  impl->normalized_matcher.Build(std::move(normalized_patterns), std::move(normalized_index));
  if (single_word) {
    auto re = Regex::Compile(R"([\p{Alphabetic}\p{N}_])");
    if (!re.ok()) return r.Bad("added_tokens", re.status().message());
    impl->word_char = *std::move(re);
  }

  // --- BOS and EOS
  const bool config_has_decoder = config != nullptr && config->is_object() && config->contains("added_tokens_decoder");
  auto resolve = [&](const std::string& key, const std::vector<std::string>& well_known,
                     bool from_prefix) -> absl::StatusOr<int> {
    TokenSetting chosen;
    if (config != nullptr) {
      ASSIGN_OR_RETURN(chosen, ReadTokenSetting(config_reader, *config, key));
    }
    if (map != nullptr && !config_has_decoder) {
      // transformers' legacy branch: special_tokens_map.json overrides the config.
      ASSIGN_OR_RETURN(TokenSetting from_map, ReadTokenSetting(map_reader, *map, key));
      if (from_map.present) chosen = from_map;
    }
    if (chosen.present) {
      if (!chosen.content.has_value()) return -1;
      if (auto id = impl->TokenToId(*chosen.content); id.has_value()) return *id;
      return absl::InvalidArgumentError(
          absl::StrCat(chosen.file, ": ", key, ": \"", *chosen.content, "\" is not a token of ", r.file()));
    }
    const std::vector<int>& side = from_prefix ? impl->prefix : impl->suffix;
    if (!side.empty()) return from_prefix ? side.front() : side.back();
    for (const std::string& name : well_known) {
      if (auto it = impl->added_by_content.find(name); it != impl->added_by_content.end()) return it->second;
    }
    return -1;
  };
  ASSIGN_OR_RETURN(impl->bos, resolve("bos_token", {"<s>", "<|begin_of_text|>", "<|endoftext|>"}, true));
  ASSIGN_OR_RETURN(impl->eos, resolve("eos_token", {"</s>", "<|end_of_text|>", "<|endoftext|>"}, false));
  if (config != nullptr && config->is_object()) {
    ASSIGN_OR_RETURN(const bool add_bos,
                     config_reader.BoolOr(*config, "add_bos_token", "add_bos_token", !impl->prefix.empty()));
    if (add_bos != !impl->prefix.empty()) {
      spdlog::warn("{}: add_bos_token is {} but the post_processor of {} {}; Encode follows the post_processor",
                   config_reader.file(), add_bos, r.file(), impl->prefix.empty() ? "adds no BOS" : "adds a BOS");
    }
  }
  return impl;
}

absl::StatusOr<json> ParseJson(absl::string_view text, const std::string& file) {
  try {
    return json::parse(text.begin(), text.end());
  } catch (const json::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": not valid JSON: ", e.what()));
  }
}

}  // namespace

HfTokenizer::HfTokenizer(std::unique_ptr<const Impl> impl) : impl_(std::move(impl)) {}
HfTokenizer::HfTokenizer(HfTokenizer&&) noexcept = default;
HfTokenizer& HfTokenizer::operator=(HfTokenizer&&) noexcept = default;
HfTokenizer::~HfTokenizer() = default;

absl::StatusOr<HfTokenizer> HfTokenizer::FromJson(absl::string_view tokenizer_json, absl::string_view tokenizer_config,
                                                  absl::string_view special_tokens_map, const std::string& name) {
  const fs::path dir = fs::path(name).parent_path();
  const Reader reader(name), config_reader((dir / "tokenizer_config.json").string()),
      map_reader((dir / "special_tokens_map.json").string());
  // The one wall for nlohmann json: any exception from here on becomes a Status.
  try {
    ASSIGN_OR_RETURN(const json root, ParseJson(tokenizer_json, name));
    std::optional<json> config, map;
    if (!tokenizer_config.empty()) {
      ASSIGN_OR_RETURN(config, ParseJson(tokenizer_config, config_reader.file()));
    }
    if (!special_tokens_map.empty()) {
      ASSIGN_OR_RETURN(map, ParseJson(special_tokens_map, map_reader.file()));
    }
    ASSIGN_OR_RETURN(std::unique_ptr<Impl> impl, Build(reader, root, config_reader, config ? &*config : nullptr,
                                                       map_reader, map ? &*map : nullptr));
    return HfTokenizer(std::move(impl));
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": unexpected JSON shape: ", e.what()));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(name, ": out of memory while loading"));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(name, ": ", e.what()));
  }
}

absl::StatusOr<HfTokenizer> HfTokenizer::Load(const std::string& path) {
  ASSIGN_OR_RETURN(const std::string text, ReadFile(path, nullptr));
  const fs::path dir = fs::path(path).parent_path();
  std::string side_files[2];
  const char* const names[2] = {"tokenizer_config.json", "special_tokens_map.json"};
  for (int i = 0; i < 2; ++i) {
    const std::string side_path = (dir / names[i]).string();
    bool exists = false;
    ASSIGN_OR_RETURN(side_files[i], ReadFile(side_path, &exists));
    // FromJson reads "" as "absent"; an empty file that is there is malformed.
    if (exists && side_files[i].empty()) return absl::InvalidArgumentError(absl::StrCat(side_path, ": empty file"));
  }
  return FromJson(text, side_files[0], side_files[1], path);
}

absl::StatusOr<std::vector<int>> HfTokenizer::Encode(absl::string_view text, bool add_special_tokens) const {
  const Impl& t = *impl_;
  size_t bad = 0;
  if (!internal::IsValidUtf8(text, &bad)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizing with ", t.name, ": the text is not valid UTF-8 at byte ", bad));
  }
  const Regex* word_char = t.word_char ? &*t.word_char : nullptr;
  // 1. Added tokens with normalized=false, on the raw text; 2. the normalizer on each other
  // segment, then the normalized added tokens in it.
  std::vector<Piece> pieces;
  std::vector<AddedTokenMatcher::Match> raw, inner;
  t.raw_matcher.Split(text, t.added, word_char, &raw);
  for (const auto& m : raw) {
    if (m.token >= 0) {
      pieces.push_back(Piece{std::string(text.substr(m.begin, m.end - m.begin)), m.begin == 0, t.added[m.token].id});
      continue;
    }
    std::string segment(text.substr(m.begin, m.end - m.begin));
    RETURN_IF_ERROR(t.Normalize(&segment));
    inner.clear();
    t.normalized_matcher.Split(segment, t.added, word_char, &inner);
    for (const auto& n : inner) {
      if (n.begin == n.end) continue;
      pieces.push_back(Piece{segment.substr(n.begin, n.end - n.begin), m.begin == 0 && n.begin == 0,
                             n.token >= 0 ? t.added[n.token].id : -1});
    }
  }
  // 3. The pre-tokenizer; 4. the model on each pre-token; 5. the post-processor's tokens.
  RETURN_IF_ERROR(t.PreTokenize(&pieces));
  std::vector<int> ids;
  ids.reserve(text.size() / 3 + t.prefix.size() + t.suffix.size());
  if (add_special_tokens) ids.insert(ids.end(), t.prefix.begin(), t.prefix.end());
  absl::flat_hash_map<std::string, std::vector<int>> cache;
  for (const Piece& piece : pieces) {
    if (piece.token >= 0) {
      ids.push_back(piece.token);
      continue;
    }
    if (piece.text.size() > kMaxCachedWordBytes) {
      t.model->Tokenize(piece.text, &ids);
      continue;
    }
    auto [it, inserted] = cache.try_emplace(piece.text);
    if (inserted) t.model->Tokenize(piece.text, &it->second);
    ids.insert(ids.end(), it->second.begin(), it->second.end());
  }
  if (add_special_tokens) ids.insert(ids.end(), t.suffix.begin(), t.suffix.end());
  return ids;
}

const std::vector<int>& HfTokenizer::prefix_ids() const { return impl_->prefix; }
const std::vector<int>& HfTokenizer::suffix_ids() const { return impl_->suffix; }

std::optional<std::string> HfTokenizer::IdToToken(int id) const {
  if (auto it = impl_->added_by_id.find(id); it != impl_->added_by_id.end()) return impl_->added[it->second].content;
  if (auto it = impl_->id_to_token.find(id); it != impl_->id_to_token.end()) return it->second;
  return std::nullopt;
}

std::optional<int> HfTokenizer::TokenToId(absl::string_view token) const { return impl_->TokenToId(token); }

absl::StatusOr<std::string> HfTokenizer::Decode(absl::Span<const int> ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    const int id = ids[i];
    if (auto it = impl_->added_by_id.find(id); it != impl_->added_by_id.end()) {
      const AddedToken& token = impl_->added[it->second];
      if (!(skip_special_tokens && token.special)) tokens.push_back(token.content);
      continue;
    }
    auto it = impl_->id_to_token.find(id);
    if (it == impl_->id_to_token.end()) {
      return absl::InvalidArgumentError(absl::StrCat("detokenizing with ", impl_->name, ": id ", id, " at position ", i,
                                                     " is not in the vocabulary (size ", impl_->vocab_size, ")"));
    }
    tokens.push_back(it->second);
  }
  std::string text;
  RETURN_IF_ERROR(impl_->Decode(std::move(tokens), &text));
  return text;
}

int HfTokenizer::vocab_size() const { return impl_->vocab_size; }
int HfTokenizer::bos_id() const { return impl_->bos; }
int HfTokenizer::eos_id() const { return impl_->eos; }

}  // namespace fedprllm
