// StateStore: the server's durable job state under <state_dir>/<job_id>/ (layout and commit
// protocol in docs/round_protocol.md §6). Every file is written atomically (tmp, fsync,
// rename, fsync of the directory); binary files carry a magic, a version and a CRC32C.
//
//   ASSIGN_OR_RETURN(StateStore store, StateStore::Open(config.state_dir, job_id));
//   RETURN_IF_ERROR(store.WriteJson("manifest.json", manifest));
//   ASSIGN_OR_RETURN(UploadRecord rec, store.WriteUpload(round, "site-a", masks));
//   RETURN_IF_ERROR(store.WriteJson(RoundFile(round), round_json));   // the commit point
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/packed_mask.h"
#include "common/sha256.h"

namespace fedprllm {

// Writes `bytes` to `path` atomically: `path`.tmp, fsync, rename, fsync of the directory.
// A non-empty `torn_write_point` names the kill point between the fsync and the rename.
absl::Status AtomicWriteFile(const std::string& path, absl::string_view bytes,
                             absl::string_view torn_write_point = "");

// Binary "mask set" file: magic "FPMS", u32 version 1, u32 kind (1 = packed masks,
// 5 = float32 values), u32 entry count; per entry u32 name length, name, u32 rank, u64 dims,
// u64 byte count, bytes; then the CRC32C (u32) of everything before it. Little-endian.
std::string EncodeMaskSet(const std::map<std::string, PackedMask>& masks);
// Fails (DATA_LOSS) on a bad magic, version, kind, CRC or truncation; `label` names the file.
absl::StatusOr<std::map<std::string, PackedMask>> DecodeMaskSet(absl::string_view bytes,
                                                                const std::string& label);

// A mask set file, memory-mapped, whose masks are read one at a time: memory holds the one
// mask asked for, never the whole set (the mapped pages are the page cache's). Immutable
// and thread-compatible after Open.
class MaskSetFile {
 public:
  // Maps `path` and checks it as DecodeMaskSet does, and its SHA-256 when
  // `expected_sha256` is not empty (DATA_LOSS naming the file otherwise).
  static absl::StatusOr<std::shared_ptr<const MaskSetFile>> Open(const std::string& path,
                                                                  const std::string& expected_sha256 = "");
  // Names and shapes of the masks, in file order.
  const std::vector<std::pair<std::string, std::vector<int64_t>>>& tensors() const { return tensors_; }
  // A copy of the mask of `name`; NOT_FOUND if the file has none.
  absl::StatusOr<PackedMask> Mask(const std::string& name) const;

 private:
  struct Entry {
    std::vector<int64_t> shape;
    absl::string_view bytes;  // into the mapping
  };
  std::shared_ptr<void> mapping_;
  std::string path_;
  std::vector<std::pair<std::string, std::vector<int64_t>>> tensors_;
  std::map<std::string, Entry> entries_;
};

// Float32 values per tensor with their shapes (weight scales), kind 5.
struct FloatTensor {
  std::vector<int64_t> shape;
  std::vector<float> values;
};
std::string EncodeFloatSet(const std::map<std::string, FloatTensor>& tensors);

// Called before every write of the state directory (and before the output model and
// report), with the file's path relative to the job directory ("job.json",
// "rounds/0/round.json", "output/model", "output/report.json"). An error stops that write
// and is returned by it, as a failing disk would: the seam through which tests crash a job
// between any two writes.
using StateWriteHook = std::function<absl::Status(const std::string& relative)>;

class StateStore {
 public:
  // Opens <state_dir>/<job_id>/, creating it (and rounds/) if needed. has_state() tells
  // whether it already holds a job (a job.json), which the caller then resumes.
  static absl::StatusOr<StateStore> Open(const std::string& state_dir, const std::string& job_id,
                                         StateWriteHook hook = nullptr);

  const std::string& dir() const { return dir_; }
  bool has_state() const;
  // Writes `relative` (e.g. "job.json", "rounds/0/round.json") atomically, creating parents.
  // Runs the hook first; kill points "before-write:<relative>" (nothing written) and
  // "torn-write:<relative>" (only <relative>.tmp written) are on this path.
  absl::Status WriteJson(const std::string& relative, const nlohmann::json& json) const;
  absl::Status WriteBytes(const std::string& relative, absl::string_view bytes) const;
  // Runs the hook and the "before-write:<relative>" kill point for a write done elsewhere.
  absl::Status BeforeWrite(const std::string& relative) const;

  bool Exists(const std::string& relative) const;
  // NOT_FOUND if missing; DATA_LOSS naming the file if it cannot be read.
  absl::StatusOr<std::string> ReadBytes(const std::string& relative) const;
  // DATA_LOSS naming the file if it is not valid JSON.
  absl::StatusOr<nlohmann::json> ReadJson(const std::string& relative) const;
  // Deletes every *.tmp under the job directory (writes a crash interrupted); returns how
  // many.
  int RemoveTempFiles() const;
  // Deletes the upload files of `round` whose client is not in `committed` (written before
  // a commit point that was never reached); returns their names.
  std::vector<std::string> RemoveOrphanUploads(int round, const std::set<std::string>& committed) const;

  static std::string RoundFile(int round);
  static std::string UploadFile(int round, const std::string& client);
  static std::string DecisionMaskFile(int round);
  static std::string DecisionScaleFile(int round);

 private:
  StateStore(std::string dir, StateWriteHook hook) : dir_(std::move(dir)), hook_(std::move(hook)) {}
  std::string dir_;
  StateWriteHook hook_;
};

}  // namespace fedprllm
