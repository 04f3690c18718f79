// Calibration data: a site's own text files (plain .txt or JSON Lines with named fields),
// tokenized once, and seeded random windows drawn from the token stream.
//
//   ASSIGN_OR_RETURN(auto tokens, TokenizeCalibrationSources(tokenizer, {{"c4.jsonl", {"prefix", "gold_completion"}}}));
//   ASSIGN_OR_RETURN(at::Tensor samples, SampleWindows(tokens, {.nsamples = 128, .seqlen = 256, .seed = 0}));
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "common/splitmix64.h"  // SampleWindows draws with SplitMix64
#include "model/tokenizer.h"

namespace fedprllm {

struct CalibrationSource {
  std::string path;
  // For JSON Lines: the string fields joined (in this order, with no separator) into one
  // record's text. Empty for plain text files.
  std::vector<std::string> jsonl_fields;
};

// Parses "file.jsonl:prefix,gold_completion" or "file.txt".
absl::StatusOr<CalibrationSource> ParseCalibrationSource(const std::string& spec);

// Reads every source: a .txt file whole, a .jsonl file as one text per record. Texts are
// joined with "\n\n". Fails on missing files, missing or non-string fields and bad UTF-8,
// naming file and line.
absl::StatusOr<std::string> ReadCalibrationText(const std::vector<CalibrationSource>& sources);

// Tokenizes the joined text once, BOS first.
absl::StatusOr<std::vector<int>> TokenizeCalibrationSources(const Tokenizer& tokenizer,
                                                            const std::vector<CalibrationSource>& sources);

struct SamplingOptions {
  // Windows to draw. Default 128 (Wanda's default). Bounds: >= 1.
  int64_t nsamples = 128;
  // Tokens per window. Default 256. Bounds: >= 2.
  int64_t seqlen = 256;
  // Seed of the window positions. Same seed and tokens give the same windows anywhere.
  uint64_t seed = 0;
};

// Draws `nsamples` windows of `seqlen` tokens at seeded random start positions in
// [0, tokens.size() - seqlen] (a platform-independent splitmix64 stream). Returns int64
// [nsamples, seqlen]. Fails when the text holds fewer than seqlen + 1 tokens.
absl::StatusOr<at::Tensor> SampleWindows(const std::vector<int>& tokens, const SamplingOptions& options);

// Splits text at the line break nearest its byte midpoint: {first half, second half}.
std::pair<std::string, std::string> SplitHalves(const std::string& text);

}  // namespace fedprllm
