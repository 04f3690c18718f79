// Calibration data reading (text, JSON Lines, .npy, raw ids), the token stream and seeded
// window sampling.
#include "engine/calibration_data.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/ascii.h"
#include "common/status_macros.h"
#include "engine/token_files.h"
#include "model/perplexity.h"
#include "model/torch_wall.h"

namespace fedprllm {
namespace {

// Returns the byte offset of the first invalid UTF-8 sequence, or npos.
size_t FindInvalidUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = s[i];
    int extra = c < 0x80 ? 0 : (c >> 5) == 0x6 ? 1 : (c >> 4) == 0xE ? 2 : (c >> 3) == 0x1E ? 3 : -1;
    if (extra < 0 || i + extra >= s.size() + (extra == 0 ? 1 : 0)) return i;
    for (int k = 1; k <= extra; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2) return i;
    }
    i += extra + 1;
  }
  return std::string::npos;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// "uint16", "int32", "float16", "bfloat16", ...: the tail of a spec that names a dtype.
bool LooksLikeDtype(const std::string& s) {
  for (const char* prefix : {"uint", "int", "float", "bfloat"}) {
    const size_t n = std::strlen(prefix);
    if (s.size() > n && s.compare(0, n, prefix) == 0 &&
        std::all_of(s.begin() + n, s.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return true;
    }
  }
  return false;
}

}  // namespace

absl::StatusOr<CalibrationSource> ParseCalibrationSource(const std::string& spec) {
  auto bad = [&spec](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("calibration source \"", spec, "\": ", why));
  };
  if (spec.empty()) return bad("empty");
  CalibrationSource source;
  source.path = spec;
  std::string option;
  bool has_option = false;
  const size_t colon = spec.rfind(':');
  if (colon != std::string::npos) {
    const std::string head = spec.substr(0, colon);
    const std::string tail = spec.substr(colon + 1);
    // The tail is an option only for a .jsonl or .npy head or when it names a dtype;
    // otherwise the ':' belongs to the path.
    if (EndsWith(head, ".jsonl") || EndsWith(head, ".npy") || LooksLikeDtype(tail)) {
      source.path = head;
      option = tail;
      has_option = true;
    }
  }
  if (source.path.empty()) return bad("no path before the ':'");
  if (EndsWith(source.path, ".jsonl")) {
    source.format = CalibrationFormat::kJsonLines;
    if (!has_option || option.empty()) {
      return bad(absl::StrCat("a .jsonl file needs its fields, e.g. ", source.path, ":text or ", source.path,
                              ":prefix+gold_completion or ", source.path, ":input_ids"));
    }
    if (option.find(',') != std::string::npos) {
      std::vector<std::string> names;
      for (absl::string_view f : absl::StrSplit(option, absl::ByAnyChar(",+"), absl::SkipWhitespace())) {
        names.emplace_back(absl::StripAsciiWhitespace(f));
      }
      return bad(absl::StrCat("JSON Lines fields are joined with '+', not ',' (',' separates list items on "
                              "command lines): write \"",
                              source.path, ":", absl::StrJoin(names, "+"), "\""));
    }
    for (absl::string_view field : absl::StrSplit(option, '+')) {
      if (field.empty()) return bad("an empty field name (fields are NAME or NAME+NAME+...)");
      source.jsonl_fields.emplace_back(field);
    }
    return source;
  }
  if (EndsWith(source.path, ".npy")) {
    if (has_option) {
      return bad(absl::StrCat("a .npy file carries its dtype and shape in its header and takes no option: write \"",
                              source.path, "\""));
    }
    source.format = CalibrationFormat::kNpy;
    return source;
  }
  if (has_option) {  // a dtype (LooksLikeDtype)
    if (option == "uint16") {
      source.format = CalibrationFormat::kRawUint16;
    } else if (option == "uint32") {
      source.format = CalibrationFormat::kRawUint32;
    } else {
      return bad(absl::StrCat("raw token files are uint16 or uint32 (little-endian, as llama2.c and nanoGPT write "
                              "them), not ",
                              option, "; other dtypes go in a .npy file"));
    }
    return source;
  }
  if (EndsWith(source.path, ".bin")) {
    return bad(absl::StrCat("a raw token file needs its dtype: ", source.path, ":uint16 or ", source.path, ":uint32"));
  }
  return source;
}

absl::Status CheckListFlagFields(const std::vector<std::string>& items, absl::string_view flag) {
  for (size_t i = 1; i < items.size(); ++i) {
    const std::string& item = items[i];
    const std::string name = item.substr(0, item.find('@'));
    const bool bare = !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
    });
    if (bare && items[i - 1].find(".jsonl:") != std::string::npos) {
      const std::string& previous = items[i - 1];
      const std::string joined = absl::StrCat(previous.substr(0, previous.find('@')), "+", item);
      return absl::InvalidArgumentError(absl::StrCat(flag, ": \"", item, "\" after \"", previous,
                                                     "\" looks like a JSON Lines field; fields are joined with '+', "
                                                     "not ',' (',' separates the flag's items): write \"",
                                                     joined, "\" (for a text file of that name, write ./", item,
                                                     ")"));
    }
  }
  return absl::OkStatus();
}

std::string CalibrationSpec(const CalibrationSource& source) {
  switch (source.format) {
    case CalibrationFormat::kJsonLines:
      return absl::StrCat(source.path, ":", absl::StrJoin(source.jsonl_fields, "+"));
    case CalibrationFormat::kRawUint16:
      return absl::StrCat(source.path, ":uint16");
    case CalibrationFormat::kRawUint32:
      return absl::StrCat(source.path, ":uint32");
    case CalibrationFormat::kText:
    case CalibrationFormat::kNpy:
      break;
  }
  return source.path;
}

namespace {

// One source once read: text (one entry per file or record), ids, or nothing (a JSON
// Lines file without records).
struct SourceContent {
  enum Kind { kEmpty, kText, kTokens } kind = kEmpty;
  std::vector<std::string> texts;
  std::vector<int> tokens;
};

// Appends the ids of `value` (a JSON list) to `*tokens`; `where` is "file:line: field \"f\"".
absl::Status AppendJsonIds(const nlohmann::json& value, const std::string& where, int64_t vocab_size,
                           std::vector<int>* tokens) {
  for (size_t i = 0; i < value.size(); ++i) {
    const nlohmann::json& id = value[i];
    int64_t v;
    if (id.is_number_unsigned()) {
      const uint64_t u = id.get<uint64_t>();
      v = u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ? std::numeric_limits<int64_t>::max()
                                                                          : static_cast<int64_t>(u);
    } else if (id.is_number_integer()) {
      v = id.get<int64_t>();
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(where, " index ", i, ": ", id.dump(), " is not an integer token id"));
    }
    if (v < 0 || v >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(where, " index ", i, ": id ", id.dump(),
                                                     " is outside the vocabulary [0, ", vocab_size, ")"));
    }
    tokens->push_back(static_cast<int>(v));
  }
  return absl::OkStatus();
}

absl::Status CheckVocabSize(const CalibrationSource& source, int64_t vocab_size) {
  if (vocab_size >= 1 && vocab_size <= std::numeric_limits<int>::max()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(source.path, ": holds token ids, but the vocabulary size to check "
                                                 "them against is ", vocab_size));
}

absl::StatusOr<SourceContent> ReadJsonLines(const CalibrationSource& source, const CalibrationReadOptions& options,
                                            int64_t* crlf) {
  ASSIGN_OR_RETURN(std::string content, ReadTextFile(source.path));
  SourceContent out;
  std::istringstream lines(content);
  std::string line;
  int64_t line_number = 0;
  while (std::getline(lines, line)) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string at = absl::StrCat(source.path, ":", line_number);
    if (size_t bad = FindInvalidUtf8(line); bad != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(at, ": invalid UTF-8 at column ", bad));
    }
    nlohmann::json record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (record.is_discarded() || !record.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(at, ": not a JSON object"));
    }
    // The record's kind comes from its first field; every field must agree, and so must
    // every record of the file (docs/calibration_data.md §2).
    SourceContent::Kind kind = SourceContent::kEmpty;
    std::string text;
    for (const std::string& field : source.jsonl_fields) {
      auto it = record.find(field);
      if (it == record.end() || !(it->is_string() || it->is_array())) {
        return absl::InvalidArgumentError(absl::StrCat(at, ": field \"", field,
                                                       "\" is missing or neither a string nor a list of token ids"));
      }
      const SourceContent::Kind field_kind = it->is_string() ? SourceContent::kText : SourceContent::kTokens;
      if (kind != SourceContent::kEmpty && field_kind != kind) {
        return absl::InvalidArgumentError(absl::StrCat(at, ": fields ", absl::StrJoin(source.jsonl_fields, "+"),
                                                       " mix strings and lists of token ids"));
      }
      kind = field_kind;
      if (kind == SourceContent::kText) {
        text += it->get<std::string>();
      } else {
        RETURN_IF_ERROR(CheckVocabSize(source, options.vocab_size));
        RETURN_IF_ERROR(AppendJsonIds(*it, absl::StrCat(at, ": field \"", field, "\""), options.vocab_size,
                                      &out.tokens));
      }
    }
    if (out.kind != SourceContent::kEmpty && kind != out.kind) {
      return absl::InvalidArgumentError(absl::StrCat(
          at, ": this record holds ", kind == SourceContent::kText ? "text" : "token ids", " but the file's first ",
          "record holds ", out.kind == SourceContent::kText ? "text" : "token ids", "; a file holds one kind"));
    }
    out.kind = kind;
    if (kind == SourceContent::kText) {
      *crlf += NormalizeCrlf(&text);
      out.texts.push_back(std::move(text));
    }
  }
  return out;
}

absl::StatusOr<SourceContent> ReadSource(const CalibrationSource& source, const CalibrationReadOptions& options) {
  SourceContent out;
  int64_t crlf = 0;
  switch (source.format) {
    case CalibrationFormat::kText: {
      ASSIGN_OR_RETURN(std::string content, ReadTextFile(source.path));
      if (size_t bad = FindInvalidUtf8(content); bad != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(source.path, ": invalid UTF-8 at byte ", bad));
      }
      crlf = NormalizeCrlf(&content);
      out.kind = SourceContent::kText;
      out.texts.push_back(std::move(content));
      break;
    }
    case CalibrationFormat::kJsonLines: {
      ASSIGN_OR_RETURN(out, ReadJsonLines(source, options, &crlf));
      break;
    }
    case CalibrationFormat::kNpy:
      RETURN_IF_ERROR(CheckVocabSize(source, options.vocab_size));
      RETURN_IF_ERROR(ReadNpyTokens(source.path, options.vocab_size, &out.tokens));
      out.kind = SourceContent::kTokens;
      break;
    case CalibrationFormat::kRawUint16:
    case CalibrationFormat::kRawUint32:
      RETURN_IF_ERROR(CheckVocabSize(source, options.vocab_size));
      RETURN_IF_ERROR(ReadRawTokens(source.path,
                                    source.format == CalibrationFormat::kRawUint16 ? RawTokenType::kUint16
                                                                                   : RawTokenType::kUint32,
                                    options.vocab_size, &out.tokens));
      out.kind = SourceContent::kTokens;
      break;
  }
  if (crlf > 0 && options.log) options.log(CrlfNote(source.path, crlf));
  return out;
}

}  // namespace

absl::StatusOr<CalibrationData> ReadCalibrationData(const std::vector<CalibrationSource>& sources,
                                                    const CalibrationReadOptions& options) {
  if (sources.empty()) return absl::InvalidArgumentError("no calibration files given");
  CalibrationData data;
  const CalibrationSource* first_text = nullptr;
  const CalibrationSource* first_tokens = nullptr;
  for (const CalibrationSource& source : sources) {
    ASSIGN_OR_RETURN(SourceContent content, ReadSource(source, options));
    if (content.kind == SourceContent::kText && first_text == nullptr) first_text = &source;
    if (content.kind == SourceContent::kTokens && first_tokens == nullptr) first_tokens = &source;
    if (first_text != nullptr && first_tokens != nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "calibration sources mix text (", CalibrationSpec(*first_text), ") and token ids (",
          CalibrationSpec(*first_tokens), "): text is tokenized with BOS first and ids are used as they are, so a "
          "site's sources must all be text or all token ids (docs/calibration_data.md)"));
    }
    for (std::string& text : content.texts) {
      if (!data.text.empty()) data.text += "\n\n";
      data.text += text;
    }
    data.tokens.insert(data.tokens.end(), content.tokens.begin(), content.tokens.end());
  }
  data.is_tokens = first_tokens != nullptr;
  return data;
}

absl::StatusOr<std::vector<int>> CalibrationStream(const Tokenizer& tokenizer, CalibrationData data) {
  if (data.is_tokens) return std::move(data.tokens);
  return tokenizer.Encode(data.text, /*add_bos=*/true);
}

absl::StatusOr<std::vector<int>> TokenizeCalibrationSources(const Tokenizer& tokenizer,
                                                            const std::vector<CalibrationSource>& sources,
                                                            const CalibrationReadOptions& options) {
  ASSIGN_OR_RETURN(CalibrationData data, ReadCalibrationData(sources, options));
  return CalibrationStream(tokenizer, std::move(data));
}

absl::StatusOr<at::Tensor> SampleWindows(const std::vector<int>& tokens, const SamplingOptions& options) {
  if (options.nsamples < 1) return absl::InvalidArgumentError("nsamples must be >= 1");
  if (options.seqlen < 2) return absl::InvalidArgumentError("seqlen must be >= 2");
  const int64_t available = static_cast<int64_t>(tokens.size());
  if (available < options.seqlen + 1) {
    return absl::InvalidArgumentError(absl::StrCat("calibration text has ", available, " tokens; a window of ",
                                                   options.seqlen, " needs at least ", options.seqlen + 1));
  }
  const uint64_t positions = static_cast<uint64_t>(available - options.seqlen + 1);
  uint64_t state = options.seed;
  std::vector<int64_t> windows(options.nsamples * options.seqlen);
  for (int64_t s = 0; s < options.nsamples; ++s) {
    const int64_t start = static_cast<int64_t>(SplitMix64(&state) % positions);
    for (int64_t t = 0; t < options.seqlen; ++t) windows[s * options.seqlen + t] = tokens[start + t];
  }
  return TorchCall("building calibration windows", [&] {
    return at::tensor(windows, at::kLong).reshape({options.nsamples, options.seqlen});
  });
}

std::pair<std::string, std::string> SplitHalves(const std::string& text) {
  // The byte offset of code point floor(N / 2), N the text's code points: a byte that is not
  // a UTF-8 continuation byte (10xxxxxx) starts a code point.
  auto starts_code_point = [&text](size_t i) { return (static_cast<unsigned char>(text[i]) & 0xC0) != 0x80; };
  size_t code_points = 0;
  for (size_t i = 0; i < text.size(); ++i) code_points += starts_code_point(i);
  size_t middle = text.size();
  for (size_t i = 0, seen = 0; i < text.size(); ++i) {
    if (!starts_code_point(i)) continue;
    if (seen == code_points / 2) {
      middle = i;
      break;
    }
    ++seen;
  }
  const size_t cut = text.find("\n\n", middle);
  if (cut == std::string::npos) return {text.substr(0, middle), text.substr(middle)};
  return {text.substr(0, cut), text.substr(cut + 2)};
}

}  // namespace fedprllm
