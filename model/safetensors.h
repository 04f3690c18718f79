// Reading and writing the safetensors format: an 8-byte little-endian header length, a
// JSON header {name: {dtype, shape, data_offsets}}, then the raw little-endian tensor bytes.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "model/mapped_file.h"

namespace fedprllm {

// Tensors keyed by name. Loaded tensors view the mapped file (copy-on-write).
using TensorMap = std::map<std::string, at::Tensor>;

// Maps `path` and returns every tensor in it. Before any tensor is created, each entry's
// dtype, shape and byte range are checked against the file; an error names the file and
// the tensor. `order`, when given, receives the tensor names in file (data offset) order.
absl::StatusOr<TensorMap> ReadSafetensors(const std::string& path, std::vector<std::string>* order = nullptr);

// Writes `tensors` (in their own dtype) to `path` atomically (temporary file, fsync,
// rename), one tensor at a time: memory beyond the tensors themselves is one contiguous
// copy of a non-contiguous tensor at most. Supports F32, F16 and BF16.
absl::Status WriteSafetensors(const std::string& path, const TensorMap& tensors);

// What is written for a tensor instead of its stored value (same shape and dtype); called
// once per tensor, in name order, while it is written.
using TensorTransform = std::function<absl::StatusOr<at::Tensor>(const std::string& name, const at::Tensor& stored)>;
// WriteSafetensors of `transform`'s results: memory holds one transformed tensor at a time.
absl::Status WriteSafetensors(const std::string& path, const TensorMap& tensors, const TensorTransform& transform);

// One tensor of a safetensors file, as its header describes it.
struct SafetensorsEntry {
  std::string name;
  at::ScalarType dtype;  // kFloat, kHalf or kBFloat16
  std::vector<int64_t> shape;
  uint64_t bytes() const;
};

// A safetensors file written as a stream, in bounded memory: the header is fixed when the
// writer is created, then the tensors' bytes follow in the entries' order, split any way.
// The file appears at `path` only when Finish succeeds (temporary file `path`.tmp.PID, fsync,
// rename); a writer destroyed before that removes its temporary file.
//
//   ASSIGN_OR_RETURN(auto writer, SafetensorsWriter::Create(path, entries));
//   for (...) RETURN_IF_ERROR(writer->Append(bytes));
//   RETURN_IF_ERROR(writer->Finish());
class SafetensorsWriter {
 public:
  // `metadata` goes into the header's __metadata__ (with "format": "pt"). The header is
  // padded with spaces (as the format allows) to leave `reserve_header_bytes` for metadata
  // known only at the end (FinishWithMetadata). Errors: a dtype that cannot be written, a
  // name given twice, a file that cannot be created.
  static absl::StatusOr<std::unique_ptr<SafetensorsWriter>> Create(
      const std::string& path, std::vector<SafetensorsEntry> entries,
      const std::map<std::string, std::string>& metadata = {}, uint64_t reserve_header_bytes = 0);
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // The next bytes of the tensor data; FAILED_PRECONDITION past the last tensor's end.
  absl::Status Append(absl::string_view bytes);
  // Bytes of tensor data still expected.
  uint64_t remaining() const { return data_bytes_ - written_; }
  // FAILED_PRECONDITION unless every tensor's bytes were appended; then fsync and rename.
  absl::Status Finish();
  // Finish, with the header's __metadata__ replaced by `metadata` (plus "format": "pt")
  // first. RESOURCE_EXHAUSTED when it does not fit the header Create reserved.
  absl::Status FinishWithMetadata(const std::map<std::string, std::string>& metadata);

 private:
  SafetensorsWriter(std::string path, std::string tmp, int fd, uint64_t data_bytes, std::string tensors_json,
                    uint64_t header_len)
      : path_(std::move(path)), tmp_(std::move(tmp)), fd_(fd), data_bytes_(data_bytes),
        tensors_json_(std::move(tensors_json)), header_len_(header_len) {}

  std::string path_;
  std::string tmp_;
  int fd_ = -1;
  uint64_t data_bytes_ = 0;
  uint64_t written_ = 0;
  std::string tensors_json_;  // the header without __metadata__
  uint64_t header_len_ = 0;   // bytes between the length prefix and the tensor data
};

// Writes `bytes` to `path` atomically (temporary file + fsync + rename).
absl::Status WriteFileAtomically(const std::string& path, absl::string_view bytes);

}  // namespace fedprllm
