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

// A file written in pieces and published atomically: Append() writes to `path`.tmp; Commit()
// fsyncs it, renames it to `path` and fsyncs the directory. Destroyed uncommitted, it
// removes the .tmp. Tracks the CRC32C and SHA-256 of what it wrote. Not thread-safe.
class AtomicFileWriter {
 public:
  // `tmp_path`: where the bytes go until Commit; default `path`.tmp.
  static absl::StatusOr<std::unique_ptr<AtomicFileWriter>> Create(const std::string& path,
                                                                  std::string tmp_path = "");
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  absl::Status Append(absl::string_view bytes);
  uint32_t crc32c() const { return crc_; }
  int64_t bytes_written() const { return written_; }
  // A non-empty `torn_write_point` names the kill point between the fsync and the rename.
  // Returns the SHA-256 (hex) of the file.
  absl::StatusOr<std::string> Commit(absl::string_view torn_write_point = "");
  // Closes and removes the .tmp instead; returns the SHA-256 (hex) the file would have had.
  absl::StatusOr<std::string> Discard();

 private:
  AtomicFileWriter(std::string path, std::string tmp_path, int fd)
      : path_(std::move(path)), tmp_path_(std::move(tmp_path)), fd_(fd) {}
  std::string path_;
  std::string tmp_path_;
  int fd_;
  uint32_t crc_ = 0;
  int64_t written_ = 0;
  Sha256 sha_;
  bool committed_ = false;
};

// Binary "mask set" file: magic "FPMS", u32 version 1, u32 kind (1 = packed masks,
// 5 = float32 values), u32 entry count; per entry u32 name length, name, u32 rank, u64 dims,
// u64 byte count, bytes; then the CRC32C (u32) of everything before it. Little-endian.
std::string EncodeMaskSet(const std::map<std::string, PackedMask>& masks);
// Fails (DATA_LOSS) on a bad magic, version, kind, CRC or truncation; `label` names the file.
absl::StatusOr<std::map<std::string, PackedMask>> DecodeMaskSet(absl::string_view bytes,
                                                                const std::string& label);

// Writes a mask set file (the format above) one mask at a time: memory holds none of them.
// The entry count is fixed at Create(); Commit() fails unless exactly that many were added.
class MaskSetWriter {
 public:
  static absl::StatusOr<MaskSetWriter> Create(const std::string& path, uint32_t entries, std::string tmp_path = "");
  absl::Status Add(const std::string& name, const PackedMask& mask);
  uint32_t added() const { return added_; }
  // Appends the CRC and publishes the file atomically; returns its SHA-256 (hex).
  absl::StatusOr<std::string> Commit(absl::string_view torn_write_point = "");
  // Publishes nothing; returns the SHA-256 (hex) the committed file would have had.
  absl::StatusOr<std::string> Discard();

 private:
  absl::Status Seal();  // checks the count and appends the CRC
  MaskSetWriter(std::unique_ptr<AtomicFileWriter> file, uint32_t entries) : file_(std::move(file)), entries_(entries) {}
  std::unique_ptr<AtomicFileWriter> file_;
  uint32_t entries_;
  uint32_t added_ = 0;
};

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
// Fails (DATA_LOSS) as DecodeMaskSet does.
absl::StatusOr<std::map<std::string, FloatTensor>> DecodeFloatSet(absl::string_view bytes, const std::string& label);

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

  // A writer for `relative` (parents created) whose bytes go to `relative`.<tag>.tmp until
  // committed, so writers of one file with different tags never meet. To publish it as
  // WriteBytes would, run BeforeWrite(relative) and then Commit(TornWritePoint(relative)).
  absl::StatusOr<MaskSetWriter> NewMaskSet(const std::string& relative, uint32_t entries,
                                           const std::string& tag) const;
  static std::string TornWritePoint(const std::string& relative) { return "torn-write:" + relative; }
  std::string Path(const std::string& relative) const;

  static std::string RoundFile(int round);
  static std::string UploadFile(int round, const std::string& client);
  // An exact-strategy site's statistics record (docs/round_protocol.md §4).
  static std::string StatisticsFile(int round, const std::string& client);
  static std::string DecisionMaskFile(int round);
  static std::string DecisionScaleFile(int round);

 private:
  StateStore(std::string dir, StateWriteHook hook) : dir_(std::move(dir)), hook_(std::move(hook)) {}
  std::string dir_;
  StateWriteHook hook_;
};

}  // namespace fedprllm
