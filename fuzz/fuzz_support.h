// Helpers shared by the fuzz targets (fuzz/*_fuzz.cc): a reader that takes typed values off
// the front of a fuzz input, and a per-process scratch file for parsers that only take a
// path. Nothing here judges the input; the parsers under test do that.
#pragma once

#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <string>
#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace fedprllm::fuzz {

// Reads little-endian values off the front of a byte range. Past the end every read yields
// zero bytes, so a short input is still a valid (if dull) input.
class ByteReader {
 public:
  ByteReader(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  uint8_t U8() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint16_t U16() { return static_cast<uint16_t>(U8() | (U8() << 8)); }
  uint32_t U32() { return U16() | (static_cast<uint32_t>(U16()) << 16); }
  uint64_t U64() { return U32() | (static_cast<uint64_t>(U32()) << 32); }
  int64_t I64() { return static_cast<int64_t>(U64()); }
  // Up to `n` bytes (fewer at the end of the input).
  std::string Bytes(size_t n) {
    n = std::min(n, remaining());
    std::string out(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return out;
  }
  // Everything not read yet.
  std::string Rest() { return Bytes(remaining()); }
  size_t remaining() const { return size_ - pos_; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// Returns the path of this process's scratch file named `stem` (in $TMPDIR or /tmp, with
// the pid in the name so parallel fuzzing jobs do not share it) after replacing its contents
// with `bytes`. The same path is reused for every input; it is removed at exit.
const std::string& WriteScratchFile(absl::string_view stem, absl::string_view bytes);

// A fresh scratch directory for this process (same naming and lifetime as the file), made
// once; callers write the files they need into it.
const std::string& ScratchDir(absl::string_view stem);

// With FEDPRLLM_FUZZ_VERBOSE set in the environment, prints "what: OK" or "what: <error>" to
// stderr, so one can see which seeds a parser accepts (fuzz/corpus/README.md). Otherwise
// does nothing. Returns `status` for chaining.
const absl::Status& Report(absl::string_view what, const absl::Status& status);

// Silences spdlog (the libraries log refusals at warn level; one line per input would
// dominate the run time). Idempotent.
void QuietLogs();

}  // namespace fedprllm::fuzz
