// Calibration text reading (txt / JSON Lines), tokenization and seeded window sampling.
#include "engine/calibration_data.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
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

}  // namespace

absl::StatusOr<CalibrationSource> ParseCalibrationSource(const std::string& spec) {
  CalibrationSource source;
  const size_t colon = spec.rfind(':');
  if (colon != std::string::npos && EndsWith(spec.substr(0, colon), ".jsonl")) {
    source.path = spec.substr(0, colon);
    for (absl::string_view field : absl::StrSplit(spec.substr(colon + 1), ',', absl::SkipEmpty())) {
      source.jsonl_fields.emplace_back(field);
    }
  } else {
    source.path = spec;
  }
  if (EndsWith(source.path, ".jsonl") && source.jsonl_fields.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("calibration source ", spec,
                                                   ": a .jsonl file needs its fields, e.g. ", spec, ":text"));
  }
  return source;
}

absl::StatusOr<std::string> ReadCalibrationText(const std::vector<CalibrationSource>& sources) {
  if (sources.empty()) return absl::InvalidArgumentError("no calibration files given");
  std::string joined;
  auto append = [&joined](const std::string& text) {
    if (!joined.empty()) joined += "\n\n";
    joined += text;
  };
  for (const CalibrationSource& source : sources) {
    ASSIGN_OR_RETURN(std::string content, ReadTextFile(source.path));
    if (source.jsonl_fields.empty()) {
      if (size_t bad = FindInvalidUtf8(content); bad != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(source.path, ": invalid UTF-8 at byte ", bad));
      }
      append(content);
      continue;
    }
    std::istringstream lines(content);
    std::string line;
    int64_t line_number = 0;
    while (std::getline(lines, line)) {
      ++line_number;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      if (size_t bad = FindInvalidUtf8(line); bad != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(source.path, ":", line_number, ": invalid UTF-8 at column ", bad));
      }
      nlohmann::json record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (record.is_discarded() || !record.is_object()) {
        return absl::InvalidArgumentError(absl::StrCat(source.path, ":", line_number, ": not a JSON object"));
      }
      std::string text;
      for (const std::string& field : source.jsonl_fields) {
        auto it = record.find(field);
        if (it == record.end() || !it->is_string()) {
          return absl::InvalidArgumentError(absl::StrCat(source.path, ":", line_number, ": field \"", field,
                                                         "\" is missing or not a string"));
        }
        text += it->get<std::string>();
      }
      append(text);
    }
  }
  return joined;
}

absl::StatusOr<std::vector<int>> TokenizeCalibrationSources(const Tokenizer& tokenizer,
                                                            const std::vector<CalibrationSource>& sources) {
  ASSIGN_OR_RETURN(std::string text, ReadCalibrationText(sources));
  return tokenizer.Encode(text, /*add_bos=*/true);
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
  const size_t middle = text.size() / 2;
  size_t cut = text.rfind('\n', middle);
  const size_t after = text.find('\n', middle);
  if (cut == std::string::npos || (after != std::string::npos && after - middle < middle - cut)) cut = after;
  if (cut == std::string::npos) cut = middle;
  else cut += 1;
  return {text.substr(0, cut), text.substr(cut)};
}

}  // namespace fedprllm
