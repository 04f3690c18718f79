// safetensors reader (validating, memory-mapped) and atomic writer.
#include "model/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/packed_mask.h"
#include "common/status_macros.h"
#include "model/llama_config.h"
#include "model/torch_wall.h"

namespace fedprllm {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

struct Entry {
  std::string name;
  at::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;
};

absl::Status Corrupt(const std::string& path, absl::string_view tensor, absl::string_view what) {
  return absl::DataLossError(tensor.empty() ? absl::StrCat(path, ": ", what)
                                            : absl::StrCat(path, ": tensor ", tensor, ": ", what));
}

absl::StatusOr<Entry> ParseEntry(const std::string& path, const std::string& name,
                                 const nlohmann::json& value, uint64_t data_bytes) {
  Entry e;
  e.name = name;
  if (!value.is_object() || !value.contains("dtype") || !value.contains("shape") ||
      !value.contains("data_offsets")) {
    return Corrupt(path, name, "header entry lacks dtype, shape or data_offsets");
  }
  const auto& dtype = value["dtype"];
  if (!dtype.is_string()) return Corrupt(path, name, "dtype is not a string");
  auto parsed = DtypeFromSafetensorsName(dtype.get<std::string>());
  if (!parsed.ok()) return Corrupt(path, name, parsed.status().message());
  e.dtype = *parsed;
  const auto& shape = value["shape"];
  if (!shape.is_array()) return Corrupt(path, name, "shape is not a list");
  uint64_t numel = 1;
  for (const auto& d : shape) {
    if (!d.is_number_integer() || d.get<int64_t>() < 0) {
      return Corrupt(path, name, "shape has a non-integer or negative dimension");
    }
    const uint64_t dim = d.get<uint64_t>();
    if (dim != 0 && numel > (uint64_t{1} << 48) / dim) return Corrupt(path, name, "shape is too large");
    numel *= dim;
    e.shape.push_back(static_cast<int64_t>(dim));
  }
  const auto& offsets = value["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned()) {
    return Corrupt(path, name, "data_offsets is not a pair of non-negative integers");
  }
  e.begin = offsets[0].get<uint64_t>();
  e.end = offsets[1].get<uint64_t>();
  const uint64_t expected = numel * at::elementSize(e.dtype);
  if (e.end < e.begin || e.end - e.begin != expected) {
    return Corrupt(path, name, absl::StrCat("byte range [", e.begin, ", ", e.end, ") does not hold ",
                                            ShapeToString(e.shape), " ", dtype.get<std::string>(),
                                            " (", expected, " bytes)"));
  }
  if (e.end > data_bytes) {
    return Corrupt(path, name, absl::StrCat("data [", e.begin, ", ", e.end, ") lies beyond the end of the file (",
                                            data_bytes, " data bytes): truncated or corrupted"));
  }
  return e;
}

}  // namespace

absl::StatusOr<TensorMap> ReadSafetensors(const std::string& path, std::vector<std::string>* order) {
  ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::Open(path));
  if (file->size() < 8) return Corrupt(path, "", "file is shorter than the 8-byte header length");
  uint64_t header_len = 0;
  std::memcpy(&header_len, file->data(), 8);  // little-endian host assumed (x86-64, aarch64)
  if (header_len > kMaxHeaderBytes || header_len > file->size() - 8) {
    return Corrupt(path, "", absl::StrCat("header length ", header_len, " exceeds the file (",
                                          file->size(), " bytes)"));
  }
  nlohmann::json header = nlohmann::json::parse(file->data() + 8, file->data() + 8 + header_len,
                                                nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return Corrupt(path, "", "header is not a valid JSON object");
  }
  const uint64_t data_offset = 8 + header_len;
  const uint64_t data_bytes = file->size() - data_offset;
  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    ASSIGN_OR_RETURN(Entry e, ParseEntry(path, it.key(), it.value(), data_bytes));
    entries.push_back(std::move(e));
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < entries.size(); ++i) {
    if (entries[i].begin < entries[i - 1].end) {
      return Corrupt(path, entries[i].name, absl::StrCat("data overlaps tensor ", entries[i - 1].name));
    }
  }
  TensorMap tensors;
  if (order != nullptr) {
    order->clear();
    for (const Entry& e : entries) order->push_back(e.name);
  }
  for (const Entry& e : entries) {
    uint8_t* ptr = file->data() + data_offset + e.begin;
    ASSIGN_OR_RETURN(at::Tensor t, TorchCall(absl::StrCat("viewing tensor ", e.name, " in ", path), [&] {
      return at::from_blob(ptr, e.shape, [file](void*) {}, at::TensorOptions().dtype(e.dtype));
    }));
    tensors.emplace(e.name, std::move(t));
  }
  return tensors;
}

namespace {

// write(2) of all of `bytes`, retrying short writes and EINTR.
absl::Status WriteAll(int fd, absl::string_view bytes, const std::string& path) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, std::min<size_t>(bytes.size() - done, 1 << 30));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::InternalError(absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteFileAtomically(const std::string& path, absl::string_view bytes) {
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot create ", tmp, ": ", std::strerror(errno)));
  if (absl::Status written = WriteAll(fd, bytes, tmp); !written.ok()) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return written;
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat("cannot flush ", tmp, ": ", std::strerror(errno)));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat("cannot rename ", tmp, " to ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

uint64_t SafetensorsEntry::bytes() const {
  uint64_t numel = 1;
  for (int64_t d : shape) numel *= static_cast<uint64_t>(d);
  return numel * at::elementSize(dtype);
}

namespace {

// The header text: the tensor entries with __metadata__ = {"format": "pt"} + `metadata`.
std::string HeaderJson(nlohmann::json tensors, const std::map<std::string, std::string>& metadata) {
  tensors["__metadata__"] = {{"format", "pt"}};
  for (const auto& [key, value] : metadata) tensors["__metadata__"][key] = value;
  return tensors.dump();
}

}  // namespace

absl::StatusOr<std::unique_ptr<SafetensorsWriter>> SafetensorsWriter::Create(
    const std::string& path, std::vector<SafetensorsEntry> entries, const std::map<std::string, std::string>& metadata,
    uint64_t reserve_header_bytes) {
  nlohmann::json tensors = nlohmann::json::object();
  uint64_t offset = 0;
  for (const SafetensorsEntry& e : entries) {
    if (e.dtype != at::kFloat && e.dtype != at::kHalf && e.dtype != at::kBFloat16) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", e.name, " has dtype ", at::toString(e.dtype), "; F32, F16 and BF16 can be written"));
    }
    if (e.name == "__metadata__" || tensors.contains(e.name)) {
      return absl::InvalidArgumentError(absl::StrCat("tensor name ", e.name, " is reserved or given twice"));
    }
    tensors[e.name] = {{"dtype", SafetensorsDtypeName(e.dtype)}, {"shape", e.shape},
                       {"data_offsets", {offset, offset + e.bytes()}}};
    offset += e.bytes();
  }
  std::string header_text = HeaderJson(tensors, metadata);
  header_text.append(reserve_header_bytes, ' ');
  header_text.append((8 - header_text.size() % 8) % 8, ' ');  // keeps tensor data 8-aligned
  const uint64_t header_len = header_text.size();
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot create ", tmp, ": ", std::strerror(errno)));
  std::unique_ptr<SafetensorsWriter> writer(new SafetensorsWriter(path, tmp, fd, offset, tensors.dump(), header_len));
  RETURN_IF_ERROR(WriteAll(fd, absl::string_view(reinterpret_cast<const char*>(&header_len), 8), tmp));
  RETURN_IF_ERROR(WriteAll(fd, header_text, tmp));
  return writer;
}

absl::Status SafetensorsWriter::FinishWithMetadata(const std::map<std::string, std::string>& metadata) {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat(path_, ": finished twice"));
  std::string header_text = HeaderJson(nlohmann::json::parse(tensors_json_), metadata);
  if (header_text.size() > header_len_) {
    return absl::ResourceExhaustedError(absl::StrCat(path_, ": final metadata needs ", header_text.size(),
                                                     " header bytes, ", header_len_, " were reserved"));
  }
  header_text.append(header_len_ - header_text.size(), ' ');
  size_t done = 0;
  while (done < header_text.size()) {
    const ssize_t n = ::pwrite(fd_, header_text.data() + done, header_text.size() - done, 8 + done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::InternalError(absl::StrCat("cannot write ", tmp_, ": ", std::strerror(errno)));
    done += static_cast<size_t>(n);
  }
  return Finish();
}

SafetensorsWriter::~SafetensorsWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!tmp_.empty()) ::unlink(tmp_.c_str());
}

absl::Status SafetensorsWriter::Append(absl::string_view bytes) {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat(path_, ": written after Finish"));
  if (bytes.size() > remaining()) {
    return absl::FailedPreconditionError(absl::StrCat(path_, ": ", bytes.size(), " bytes appended, ", remaining(),
                                                      " expected before the end of the last tensor"));
  }
  RETURN_IF_ERROR(WriteAll(fd_, bytes, tmp_));
  written_ += bytes.size();
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Finish() {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat(path_, ": finished twice"));
  if (remaining() != 0) {
    return absl::FailedPreconditionError(absl::StrCat(path_, ": ", remaining(), " bytes of tensor data missing"));
  }
  const int fd = fd_;
  fd_ = -1;
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    return absl::InternalError(absl::StrCat("cannot flush ", tmp_, ": ", std::strerror(errno)));
  }
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot rename ", tmp_, " to ", path_, ": ", std::strerror(errno)));
  }
  tmp_.clear();
  return absl::OkStatus();
}

absl::Status WriteSafetensors(const std::string& path, const TensorMap& tensors) {
  return WriteSafetensors(path, tensors, nullptr);
}

absl::Status WriteSafetensors(const std::string& path, const TensorMap& tensors, const TensorTransform& transform) {
  return TorchCall(absl::StrCat("writing ", path), [&]() -> absl::Status {
    std::vector<SafetensorsEntry> entries;
    for (const auto& [name, tensor] : tensors) {
      entries.push_back({name, tensor.scalar_type(), tensor.sizes().vec()});
    }
    ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsWriter> writer, SafetensorsWriter::Create(path, std::move(entries)));
    for (const auto& [name, tensor] : tensors) {
      at::Tensor value = tensor;
      if (transform) {
        ASSIGN_OR_RETURN(value, transform(name, tensor));
        if (value.sizes() != tensor.sizes() || value.scalar_type() != tensor.scalar_type()) {
          return absl::InternalError(absl::StrCat("tensor ", name, " changed its shape or dtype while being written"));
        }
      }
      const at::Tensor t = value.to(at::kCPU).contiguous();
      RETURN_IF_ERROR(writer->Append(
          absl::string_view(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size())));
    }
    return writer->Finish();
  });
}

}  // namespace fedprllm
