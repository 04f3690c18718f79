// Calibration data: a site's own files, read as text (plain text, JSON Lines string fields)
// and tokenized once, or as token ids (.npy, JSON Lines lists of ids, raw uint16/uint32
// files) used as they are; and seeded random windows drawn from the token stream. The spec
// syntax, the kinds and the join rules are specified in docs/calibration_data.md.
//
//   ASSIGN_OR_RETURN(CalibrationSource c4, ParseCalibrationSource("c4.jsonl:prefix+gold_completion"));
//   CalibrationReadOptions read{model.config().vocab_size, log};
//   ASSIGN_OR_RETURN(std::vector<int> tokens, TokenizeCalibrationSources(tokenizer, {c4}, read));
//   ASSIGN_OR_RETURN(at::Tensor samples, SampleWindows(tokens, {.nsamples = 128, .seqlen = 256, .seed = 0}));
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "common/splitmix64.h"  // SampleWindows draws with SplitMix64
#include "model/tokenizer.h"

namespace fedprllm {

enum class CalibrationFormat {
  kText,       // PATH: plain UTF-8 text, read whole
  kJsonLines,  // PATH.jsonl:FIELD+FIELD: the named fields of each record (text or ids)
  kNpy,        // PATH.npy: a NumPy array of token ids
  kRawUint16,  // PATH:uint16: raw little-endian ids, 2 bytes each
  kRawUint32,  // PATH:uint32: raw little-endian ids, 4 bytes each
};

struct CalibrationSource {
  std::string path;
  CalibrationFormat format = CalibrationFormat::kText;
  // kJsonLines: the fields of each record, concatenated in this order with nothing
  // between them (all strings: a text record; all lists of ids: an ids record). Empty for
  // the other formats.
  std::vector<std::string> jsonl_fields;
};

// Parses one source spec (docs/calibration_data.md §1): "file.txt",
// "file.jsonl:prefix+gold_completion", "file.npy", "train.bin:uint16". Refuses the old field
// separator ("file.jsonl:a,b") with a message showing the '+' spelling, a .jsonl without
// fields, a .bin without its dtype, an option on a .npy and unsupported raw dtypes.
absl::StatusOr<CalibrationSource> ParseCalibrationSource(const std::string& spec);

// For list flags, which split at ',' before a spec is parsed: "c4.jsonl:prefix,gold" arrives
// as the items "c4.jsonl:prefix" and "gold". Refuses an item that is a bare name (letters,
// digits, '_' and '-' only, optionally followed by "@part") right after an item holding
// ".jsonl:", with a message for `flag` that shows the '+' spelling.
absl::Status CheckListFlagFields(const std::vector<std::string>& items, absl::string_view flag);

// The spec that ParseCalibrationSource turns into `source`.
std::string CalibrationSpec(const CalibrationSource& source);

// What a list of sources holds once read: text to tokenize, or token ids to use as they are.
struct CalibrationData {
  bool is_tokens = false;
  // Text sources: every text (a file; a JSON Lines record) in order, joined with "\n\n",
  // CRLF already normalized to LF.
  std::string text;
  // Token sources: every id in order, nothing inserted; each in [0, vocab_size).
  std::vector<int> tokens;
};

struct CalibrationReadOptions {
  // Token ids must lie in [0, vocab_size): the model's vocab_size (its embedding rows).
  // Required (>= 1) when a source holds token ids; unused for text. Default 0.
  int64_t vocab_size = 0;
  // Receives one line per file an operator should know about (CRLF line ends normalized).
  // Default: none.
  std::function<void(const std::string&)> log;
};

// Reads every source (docs/calibration_data.md §2-§6). Fails on missing files, missing or
// mistyped fields, bad UTF-8, bad .npy headers, raw files of a partial id, ids out of
// range and a mix of text and token sources, naming the file and the position (line,
// index, row and column, byte).
absl::StatusOr<CalibrationData> ReadCalibrationData(const std::vector<CalibrationSource>& sources,
                                                    const CalibrationReadOptions& options);

// The token stream of `data`: text tokenized once with BOS first, or the ids unchanged.
absl::StatusOr<std::vector<int>> CalibrationStream(const Tokenizer& tokenizer, CalibrationData data);

// ReadCalibrationData, then CalibrationStream.
absl::StatusOr<std::vector<int>> TokenizeCalibrationSources(const Tokenizer& tokenizer,
                                                            const std::vector<CalibrationSource>& sources,
                                                            const CalibrationReadOptions& options);

struct SamplingOptions {
  // Windows to draw. Default 128 (Wanda's default). Bounds: >= 1.
  int64_t nsamples = 128;
  // Tokens per window. Default 256. Bounds: >= 2, and at most the model's
  // max_position_embeddings (checked where the model is known: CheckSeqlenFitsModel).
  int64_t seqlen = 256;
  // Seed of the window positions. Same seed and tokens give the same windows anywhere.
  uint64_t seed = 0;
};

// Draws `nsamples` windows of `seqlen` tokens at seeded random start positions in
// [0, tokens.size() - seqlen] (a platform-independent splitmix64 stream). Returns int64
// [nsamples, seqlen]. Fails when the text holds fewer than seqlen + 1 tokens.
absl::StatusOr<at::Tensor> SampleWindows(const std::vector<int>& tokens, const SamplingOptions& options);

// Splits text into {held-out half, calibration half} (docs/calibration_data.md §9), the split
// Wanda-style references use: with N the text's code points (UTF-8), the first half ends at the
// first "\n\n" that starts at or after code point floor(N / 2), and the second half starts
// right after that "\n\n" (the two newlines belong to neither half). A text with no "\n\n"
// there is cut at code point floor(N / 2) itself, nothing dropped. Requires valid UTF-8 (as
// ReadCalibrationData guarantees); on other bytes the count is of non-continuation bytes.
std::pair<std::string, std::string> SplitHalves(const std::string& text);

}  // namespace fedprllm
