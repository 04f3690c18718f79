// Readers of token-id files for calibration (docs/calibration_data.md §5, §6): NumPy .npy
// arrays (int32, int64 or uint32; 1-D or 2-D, C order) and raw little-endian uint16/uint32
// files as llama2.c and nanoGPT write them. Both treat the file as untrusted: every size and
// every id is checked before use, and an error names the file and the position.
//
//   std::vector<int> ids;
//   RETURN_IF_ERROR(ReadNpyTokens("train.npy", /*vocab_size=*/32000, &ids));
//   RETURN_IF_ERROR(ReadRawTokens("train.bin", RawTokenType::kUint16, 32000, &ids));
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fedprllm {

// The largest .npy header accepted, in bytes (numpy's own default reading limit).
inline constexpr int64_t kMaxNpyHeaderBytes = 10000;

// An .npy file's header, parsed and checked.
struct NpyHeader {
  // Bytes per id: 4 (int32, uint32) or 8 (int64).
  int item_size = 0;
  bool is_signed = false;
  // The dtype as numpy names it: "int32", "int64" or "uint32".
  std::string dtype;
  // 1 or 2 dimensions, each >= 0.
  std::vector<int64_t> shape;
  // Where the data starts: magic, version, length field and header.
  int64_t data_offset = 0;
  // product(shape) * item_size.
  int64_t data_bytes = 0;
};

// Parses the start of an .npy file (`prefix`: its first bytes, at least all of the header
// when the file has one) named `path` in messages. Accepts versions 1.0, 2.0 and 3.0,
// little-endian int32/int64/uint32, fortran_order False, 1-D or 2-D; refuses everything
// else with a message saying what was found and what is accepted. Does not look at the data.
absl::StatusOr<NpyHeader> ParseNpyHeader(absl::string_view prefix, const std::string& path);

// Appends the ids of the .npy file at `path` to `*ids` (the rows of a 2-D array in row
// order). Requires vocab_size >= 1. Fails, appending nothing, on a bad header, a data size
// other than the header's, or an id outside [0, vocab_size) (naming its index, or its row
// and column).
absl::Status ReadNpyTokens(const std::string& path, int64_t vocab_size, std::vector<int>* ids);

enum class RawTokenType { kUint16, kUint32 };
// "uint16" / "uint32".
const char* RawTokenTypeName(RawTokenType type);

// Appends the ids of the raw little-endian file at `path` to `*ids`. Requires
// vocab_size >= 1. Fails, appending nothing, when the size is not a whole number of ids or
// an id is outside [0, vocab_size) (naming its index and byte offset).
absl::Status ReadRawTokens(const std::string& path, RawTokenType type, int64_t vocab_size, std::vector<int>* ids);

}  // namespace fedprllm
