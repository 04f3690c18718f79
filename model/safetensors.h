// Reading and writing the safetensors format: an 8-byte little-endian header length, a
// JSON header {name: {dtype, shape, data_offsets}}, then the raw little-endian tensor bytes.
#pragma once

#include <map>
#include <memory>
#include <string>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "model/mapped_file.h"

namespace fedprllm {

// Tensors keyed by name. Loaded tensors view the mapped file (copy-on-write).
using TensorMap = std::map<std::string, at::Tensor>;

// Maps `path` and returns every tensor in it. Before any tensor is created, each entry's
// dtype, shape and byte range are checked against the file; an error names the file and
// the tensor.
absl::StatusOr<TensorMap> ReadSafetensors(const std::string& path);

// Writes `tensors` (contiguous copies of them, in their own dtype) to `path` atomically
// (temporary file, fsync, rename). Supports F32, F16 and BF16.
absl::Status WriteSafetensors(const std::string& path, const TensorMap& tensors);

// Writes `bytes` to `path` atomically (temporary file + fsync + rename).
absl::Status WriteFileAtomically(const std::string& path, absl::string_view bytes);

}  // namespace fedprllm
