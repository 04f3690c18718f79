// Fuzz target: the calibration readers (engine/calibration_data.h, engine/token_files.h):
// plain text, JSON Lines text and id records, NumPy .npy headers and arrays, raw uint16 and
// uint32 id files, and the source spec syntax. input[0] % 8 picks the reader; the rest is
// the file (or, for mode 7, the spec). Token ids are checked against a 512-entry vocabulary
// (stories260K's).
//
//   0 text   1 JSON Lines "text"   2 JSON Lines "prefix+gold_completion"   3 JSON Lines
//   "input_ids"   4 .npy (ParseNpyHeader on the bytes, then the reader)   5 raw uint16
//   6 raw uint32   7 a source spec ("c4.jsonl:text", "train.bin:uint16", ...)
#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/strings/str_split.h"
#include "engine/calibration_data.h"
#include "engine/token_files.h"
#include "fuzz/fuzz_support.h"

namespace fedprllm::fuzz {
namespace {

constexpr int64_t kVocabSize = 512;

void FuzzSpec(const std::string& spec) {
  absl::StatusOr<CalibrationSource> source = ParseCalibrationSource(spec);
  Report("ParseCalibrationSource", source.status());
  if (source.ok()) {
    // The printed spec must parse back to the same source.
    absl::StatusOr<CalibrationSource> again = ParseCalibrationSource(CalibrationSpec(*source));
    if (!again.ok() || again->path != source->path || again->format != source->format ||
        again->jsonl_fields != source->jsonl_fields) {
      __builtin_trap();
    }
  }
  const std::vector<std::string> items = absl::StrSplit(spec, ',');
  (void)CheckListFlagFields(items, "--calibration");
}

void FuzzFile(uint8_t mode, absl::string_view bytes) {
  CalibrationSource source;
  switch (mode) {
    case 0: source.format = CalibrationFormat::kText; break;
    case 1: source.format = CalibrationFormat::kJsonLines; source.jsonl_fields = {"text"}; break;
    case 2: source.format = CalibrationFormat::kJsonLines; source.jsonl_fields = {"prefix", "gold_completion"}; break;
    case 3: source.format = CalibrationFormat::kJsonLines; source.jsonl_fields = {"input_ids"}; break;
    case 4: source.format = CalibrationFormat::kNpy; break;
    case 5: source.format = CalibrationFormat::kRawUint16; break;
    default: source.format = CalibrationFormat::kRawUint32; break;
  }
  if (source.format == CalibrationFormat::kNpy) {
    absl::StatusOr<NpyHeader> header = ParseNpyHeader(bytes, "fuzz.npy");
    if (header.ok() && (header->data_offset < 0 || header->data_bytes < 0)) __builtin_trap();
  }
  source.path = WriteScratchFile("calibration", bytes);
  CalibrationReadOptions options;
  options.vocab_size = kVocabSize;
  absl::StatusOr<CalibrationData> data = ReadCalibrationData({source}, options);
  Report("ReadCalibrationData", data.status());
  if (!data.ok()) return;
  for (int id : data->tokens) {
    if (id < 0 || id >= kVocabSize) __builtin_trap();  // the readers promise the range
  }
}

}  // namespace
}  // namespace fedprllm::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fedprllm::fuzz;
  QuietLogs();
  if (size == 0) return 0;
  const uint8_t mode = data[0] % 8;
  const absl::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (mode == 7) {
    FuzzSpec(std::string(rest));
  } else {
    FuzzFile(mode, rest);
  }
  return 0;
}
