// MappedFile: a whole file mapped copy-on-write into memory, shared by the tensors that
// view it (they keep it alive). Writes through a tensor never reach the file.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace fedprllm {

class MappedFile {
 public:
  // Maps `path`; an empty file maps to size() == 0.
  static absl::StatusOr<std::shared_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }

 private:
  MappedFile(std::string path, uint8_t* data, uint64_t size)
      : path_(std::move(path)), data_(data), size_(size) {}
  std::string path_;
  uint8_t* data_;
  uint64_t size_;
};

}  // namespace fedprllm
