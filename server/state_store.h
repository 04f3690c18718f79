// StateStore: the server's durable job state under <state_dir>/<job_id>/ (layout and commit
// protocol in docs/round_protocol.md §6). Every file is written atomically (tmp, fsync,
// rename, fsync of the directory); binary files carry a magic, a version and a CRC32C.
//
//   ASSIGN_OR_RETURN(StateStore store, StateStore::Create(config.state_dir, job_id));
//   RETURN_IF_ERROR(store.WriteJson("manifest.json", manifest));
//   ASSIGN_OR_RETURN(UploadRecord rec, store.WriteUpload(round, "site-a", masks));
//   RETURN_IF_ERROR(store.WriteJson(RoundFile(round), round_json));   // the commit point
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/packed_mask.h"

namespace fedprllm {

// Writes `bytes` to `path` atomically: `path`.tmp, fsync, rename, fsync of the directory.
absl::Status AtomicWriteFile(const std::string& path, absl::string_view bytes);

// Binary "mask set" file: magic "FPMS", u32 version 1, u32 kind (1 = packed masks,
// 5 = float32 values), u32 entry count; per entry u32 name length, name, u32 rank, u64 dims,
// u64 byte count, bytes; then the CRC32C (u32) of everything before it. Little-endian.
std::string EncodeMaskSet(const std::map<std::string, PackedMask>& masks);
// Fails (DATA_LOSS) on a bad magic, version, kind, CRC or truncation; `label` names the file.
absl::StatusOr<std::map<std::string, PackedMask>> DecodeMaskSet(absl::string_view bytes,
                                                                const std::string& label);
// Float32 values per tensor with their shapes (weight scales), kind 5.
struct FloatTensor {
  std::vector<int64_t> shape;
  std::vector<float> values;
};
std::string EncodeFloatSet(const std::map<std::string, FloatTensor>& tensors);

// Lower-case hex SHA-256.
std::string Sha256Hex(absl::string_view bytes);

class StateStore {
 public:
  // Creates <state_dir>/<job_id>/. Refuses (FAILED_PRECONDITION) if that directory already
  // holds a job.json: resuming a job is specified but not implemented yet, and an existing
  // job's state is never overwritten.
  static absl::StatusOr<StateStore> Create(const std::string& state_dir, const std::string& job_id);

  const std::string& dir() const { return dir_; }
  // Writes `relative` (e.g. "job.json", "rounds/0/round.json") atomically, creating parents.
  absl::Status WriteJson(const std::string& relative, const nlohmann::json& json) const;
  absl::Status WriteBytes(const std::string& relative, absl::string_view bytes) const;

  static std::string RoundFile(int round);
  static std::string UploadFile(int round, const std::string& client);
  static std::string DecisionMaskFile(int round);
  static std::string DecisionScaleFile(int round);

 private:
  explicit StateStore(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
};

}  // namespace fedprllm
