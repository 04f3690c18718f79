// The state directory: atomic file writes and the binary mask-set and float-set formats.
#include "server/state_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "common/crash_point.h"
#include "common/crc32c.h"
#include "common/status_macros.h"
#include "model/mapped_file.h"

namespace fedprllm {
namespace {

constexpr char kMagic[4] = {'F', 'P', 'M', 'S'};
constexpr uint32_t kVersion = 1;
constexpr uint32_t kKindMasks = 1;
constexpr uint32_t kKindFloat32 = 5;

absl::Status Errno(absl::string_view what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

// Bounds-checked little-endian reader.
class Reader {
 public:
  explicit Reader(absl::string_view data) : data_(data) {}
  bool U32(uint32_t* v) {
    if (data_.size() - pos_ < 4) return false;
    *v = 0;
    for (int i = 0; i < 4; ++i) *v |= uint32_t{static_cast<uint8_t>(data_[pos_ + i])} << (8 * i);
    pos_ += 4;
    return true;
  }
  bool U64(uint64_t* v) {
    if (data_.size() - pos_ < 8) return false;
    *v = 0;
    for (int i = 0; i < 8; ++i) *v |= uint64_t{static_cast<uint8_t>(data_[pos_ + i])} << (8 * i);
    pos_ += 8;
    return true;
  }
  bool Bytes(uint64_t n, absl::string_view* out) {
    if (data_.size() - pos_ < n) return false;
    *out = data_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  size_t remaining() const { return data_.size() - pos_; }

 private:
  absl::string_view data_;
  size_t pos_ = 0;
};

void PutEntryHeader(std::string* out, const std::string& name, const std::vector<int64_t>& shape,
                    uint64_t nbytes) {
  PutU32(out, static_cast<uint32_t>(name.size()));
  out->append(name);
  PutU32(out, static_cast<uint32_t>(shape.size()));
  for (int64_t d : shape) PutU64(out, static_cast<uint64_t>(d));
  PutU64(out, nbytes);
}

std::string Seal(std::string body) {
  PutU32(&body, crc32c::Value(body));
  return body;
}

}  // namespace

absl::StatusOr<std::unique_ptr<AtomicFileWriter>> AtomicFileWriter::Create(const std::string& path,
                                                                            std::string tmp_path) {
  if (tmp_path.empty()) tmp_path = path + ".tmp";
  const int fd = ::open(tmp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("cannot create", tmp_path);
  return std::unique_ptr<AtomicFileWriter>(new AtomicFileWriter(path, std::move(tmp_path), fd));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_path_.c_str());
}

absl::Status AtomicFileWriter::Append(absl::string_view bytes) {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat(tmp_path_, " is closed"));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("cannot write", tmp_path_);
    }
    done += static_cast<size_t>(n);
  }
  crc_ = crc32c::Extend(crc_, bytes.data(), bytes.size());
  sha_.Update(bytes);
  written_ += static_cast<int64_t>(bytes.size());
  return absl::OkStatus();
}

absl::StatusOr<std::string> AtomicFileWriter::Commit(absl::string_view torn_write_point) {
  const std::string& tmp = tmp_path_;
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat(tmp, " is closed"));
  const int fd = fd_;
  fd_ = -1;
  if (::fsync(fd) != 0) {
    const absl::Status s = Errno("cannot fsync", tmp);
    ::close(fd);
    return s;
  }
  if (::close(fd) != 0) return Errno("cannot close", tmp);
  if (!torn_write_point.empty()) CrashPoint(torn_write_point);
  if (::rename(tmp.c_str(), path_.c_str()) != 0) return Errno("cannot rename to", path_);
  committed_ = true;
  const std::string dir = std::filesystem::path(path_).parent_path().string();
  const int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return Errno("cannot open directory", dir);
  const int rc = ::fsync(dfd);
  ::close(dfd);
  if (rc != 0) return Errno("cannot fsync directory", dir);
  return sha_.FinishHex();
}

absl::StatusOr<std::string> AtomicFileWriter::Discard() {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat(tmp_path_, " is closed"));
  ::close(fd_);
  fd_ = -1;
  ::unlink(tmp_path_.c_str());
  return sha_.FinishHex();
}

absl::Status AtomicWriteFile(const std::string& path, absl::string_view bytes, absl::string_view torn_write_point) {
  ASSIGN_OR_RETURN(std::unique_ptr<AtomicFileWriter> file, AtomicFileWriter::Create(path));
  RETURN_IF_ERROR(file->Append(bytes));
  return file->Commit(torn_write_point).status();
}

absl::StatusOr<MaskSetWriter> MaskSetWriter::Create(const std::string& path, uint32_t entries, std::string tmp_path) {
  ASSIGN_OR_RETURN(std::unique_ptr<AtomicFileWriter> file, AtomicFileWriter::Create(path, std::move(tmp_path)));
  std::string header(kMagic, 4);
  PutU32(&header, kVersion);
  PutU32(&header, kKindMasks);
  PutU32(&header, entries);
  RETURN_IF_ERROR(file->Append(header));
  return MaskSetWriter(std::move(file), entries);
}

absl::Status MaskSetWriter::Add(const std::string& name, const PackedMask& mask) {
  if (added_ == entries_) return absl::FailedPreconditionError(absl::StrCat("mask set already has its ", entries_, " entries"));
  std::string entry;
  PutEntryHeader(&entry, name, mask.shape(), mask.bytes().size());
  RETURN_IF_ERROR(file_->Append(entry));
  RETURN_IF_ERROR(file_->Append(absl::string_view(reinterpret_cast<const char*>(mask.bytes().data()), mask.bytes().size())));
  ++added_;
  return absl::OkStatus();
}

absl::Status MaskSetWriter::Seal() {
  if (added_ != entries_) {
    return absl::FailedPreconditionError(absl::StrCat("mask set has ", added_, " of its ", entries_, " entries"));
  }
  std::string crc;
  PutU32(&crc, file_->crc32c());
  return file_->Append(crc);
}

absl::StatusOr<std::string> MaskSetWriter::Commit(absl::string_view torn_write_point) {
  RETURN_IF_ERROR(Seal());
  return file_->Commit(torn_write_point);
}

absl::StatusOr<std::string> MaskSetWriter::Discard() {
  RETURN_IF_ERROR(Seal());
  return file_->Discard();
}

std::string EncodeMaskSet(const std::map<std::string, PackedMask>& masks) {
  std::string out(kMagic, 4);
  PutU32(&out, kVersion);
  PutU32(&out, kKindMasks);
  PutU32(&out, static_cast<uint32_t>(masks.size()));
  for (const auto& [name, mask] : masks) {
    PutEntryHeader(&out, name, mask.shape(), mask.bytes().size());
    out.append(reinterpret_cast<const char*>(mask.bytes().data()), mask.bytes().size());
  }
  return Seal(std::move(out));
}

std::string EncodeFloatSet(const std::map<std::string, FloatTensor>& tensors) {
  std::string out(kMagic, 4);
  PutU32(&out, kVersion);
  PutU32(&out, kKindFloat32);
  PutU32(&out, static_cast<uint32_t>(tensors.size()));
  for (const auto& [name, t] : tensors) {
    PutEntryHeader(&out, name, t.shape, 4 * t.values.size());
    for (float f : t.values) {
      uint32_t bits;
      std::memcpy(&bits, &f, 4);
      PutU32(&out, bits);
    }
  }
  return Seal(std::move(out));
}

namespace {

// One entry of a mask set, its bytes a view into the file's bytes.
struct MaskSetEntry {
  std::string name;
  std::vector<int64_t> shape;
  absl::string_view bytes;
};

// Checks a mask set file's magic, CRC, version and kind (masks, or float32 values), and
// lists its entries.
absl::StatusOr<std::vector<MaskSetEntry>> ParseMaskSet(absl::string_view bytes, const std::string& label,
                                                       uint32_t expected_kind = kKindMasks) {
  auto bad = [&](absl::string_view why) { return absl::DataLossError(absl::StrCat(label, ": ", why)); };
  if (bytes.size() < 20 || bytes.substr(0, 4) != absl::string_view(kMagic, 4)) return bad("not a mask set file");
  const absl::string_view body = bytes.substr(0, bytes.size() - 4);
  Reader crc_reader(bytes.substr(bytes.size() - 4));
  uint32_t crc = 0;
  crc_reader.U32(&crc);
  if (crc != crc32c::Value(body.data(), body.size())) return bad("CRC32C mismatch");
  Reader r(body.substr(4));
  uint32_t version, kind, count;
  if (!r.U32(&version) || !r.U32(&kind) || !r.U32(&count)) return bad("truncated header");
  if (version != kVersion || kind != expected_kind) return bad(absl::StrCat("version ", version, " kind ", kind));
  std::vector<MaskSetEntry> out;
  for (uint32_t i = 0; i < count; ++i) {
    uint32_t name_len, rank;
    absl::string_view name;
    if (!r.U32(&name_len) || !r.Bytes(name_len, &name) || !r.U32(&rank) || rank > 8) return bad("bad entry");
    std::vector<int64_t> shape(rank);
    for (auto& d : shape) {
      uint64_t v;
      if (!r.U64(&v) || v > (uint64_t{1} << 40)) return bad("bad shape");
      d = static_cast<int64_t>(v);
    }
    uint64_t nbytes;
    absl::string_view data;
    if (!r.U64(&nbytes) || !r.Bytes(nbytes, &data)) return bad("truncated entry");
    const int64_t numel = NumElements(shape);
    if (static_cast<int64_t>(nbytes) != (expected_kind == kKindMasks ? (numel + 7) / 8 : 4 * numel)) {
      return bad(absl::StrCat("entry ", name, " has ", nbytes, " bytes for shape ", ShapeToString(shape)));
    }
    out.push_back({std::string(name), std::move(shape), data});
  }
  if (r.remaining() != 0) return bad("trailing bytes");
  return out;
}

}  // namespace

absl::StatusOr<std::map<std::string, PackedMask>> DecodeMaskSet(absl::string_view bytes,
                                                                const std::string& label) {
  ASSIGN_OR_RETURN(std::vector<MaskSetEntry> entries, ParseMaskSet(bytes, label));
  std::map<std::string, PackedMask> out;
  for (MaskSetEntry& e : entries) {
    auto mask = PackedMask::FromBytes(e.shape, std::vector<uint8_t>(e.bytes.begin(), e.bytes.end()));
    if (!mask.ok()) return absl::DataLossError(absl::StrCat(label, ": ", mask.status().message()));
    out.emplace(std::move(e.name), *std::move(mask));
  }
  return out;
}

absl::StatusOr<std::map<std::string, FloatTensor>> DecodeFloatSet(absl::string_view bytes, const std::string& label) {
  ASSIGN_OR_RETURN(std::vector<MaskSetEntry> entries, ParseMaskSet(bytes, label, kKindFloat32));
  std::map<std::string, FloatTensor> out;
  for (MaskSetEntry& e : entries) {
    FloatTensor t{std::move(e.shape), std::vector<float>(e.bytes.size() / 4)};
    for (size_t i = 0; i < t.values.size(); ++i) {
      uint32_t bits = 0;
      for (int b = 0; b < 4; ++b) bits |= uint32_t{static_cast<uint8_t>(e.bytes[4 * i + b])} << (8 * b);
      std::memcpy(&t.values[i], &bits, 4);
    }
    out.emplace(std::move(e.name), std::move(t));
  }
  return out;
}

absl::StatusOr<std::shared_ptr<const MaskSetFile>> MaskSetFile::Open(const std::string& path,
                                                                      const std::string& expected_sha256) {
  ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> mapped, MappedFile::Open(path));
  const absl::string_view bytes(reinterpret_cast<const char*>(mapped->data()), mapped->size());
  if (!expected_sha256.empty() && Sha256Hex(bytes) != expected_sha256) {
    return absl::DataLossError(absl::StrCat(path, ": SHA-256 differs from its commit record"));
  }
  ASSIGN_OR_RETURN(std::vector<MaskSetEntry> entries, ParseMaskSet(bytes, path));
  auto file = std::shared_ptr<MaskSetFile>(new MaskSetFile());
  file->mapping_ = mapped;
  file->path_ = path;
  for (MaskSetEntry& e : entries) {
    file->tensors_.emplace_back(e.name, e.shape);
    if (!file->entries_.emplace(e.name, Entry{std::move(e.shape), e.bytes}).second) {
      return absl::DataLossError(absl::StrCat(path, ": entry ", e.name, " appears twice"));
    }
  }
  return std::shared_ptr<const MaskSetFile>(std::move(file));
}

absl::StatusOr<PackedMask> MaskSetFile::Mask(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) return absl::NotFoundError(absl::StrCat(path_, " has no mask for ", name));
  const absl::string_view b = it->second.bytes;
  return PackedMask::FromBytes(it->second.shape, std::vector<uint8_t>(b.begin(), b.end()));
}

absl::StatusOr<StateStore> StateStore::Open(const std::string& state_dir, const std::string& job_id,
                                            StateWriteHook hook) {
  const std::filesystem::path dir = std::filesystem::path(state_dir) / job_id;
  std::error_code ec;
  std::filesystem::create_directories(dir / "rounds", ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir.string(), ": ", ec.message()));
  return StateStore(dir.string(), std::move(hook));
}

bool StateStore::has_state() const { return Exists("job.json"); }

absl::Status StateStore::BeforeWrite(const std::string& relative) const {
  if (hook_ != nullptr) RETURN_IF_ERROR(hook_(relative));
  CrashPoint(absl::StrCat("before-write:", relative));
  return absl::OkStatus();
}

absl::Status StateStore::WriteBytes(const std::string& relative, absl::string_view bytes) const {
  RETURN_IF_ERROR(BeforeWrite(relative));
  const std::filesystem::path path = std::filesystem::path(dir_) / relative;
  std::error_code ec;
  std::filesystem::create_directories(path.parent_path(), ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", path.parent_path().string(), ": ", ec.message()));
  return AtomicWriteFile(path.string(), bytes, TornWritePoint(relative));
}

std::string StateStore::Path(const std::string& relative) const { return (std::filesystem::path(dir_) / relative).string(); }

absl::StatusOr<MaskSetWriter> StateStore::NewMaskSet(const std::string& relative, uint32_t entries,
                                                     const std::string& tag) const {
  const std::filesystem::path path = std::filesystem::path(dir_) / relative;
  std::error_code ec;
  std::filesystem::create_directories(path.parent_path(), ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", path.parent_path().string(), ": ", ec.message()));
  return MaskSetWriter::Create(path.string(), entries, absl::StrCat(path.string(), ".", tag, ".tmp"));
}

absl::Status StateStore::WriteJson(const std::string& relative, const nlohmann::json& json) const {
  return WriteBytes(relative, json.dump(2) + "\n");
}

bool StateStore::Exists(const std::string& relative) const {
  std::error_code ec;
  return std::filesystem::exists(std::filesystem::path(dir_) / relative, ec);
}

absl::StatusOr<std::string> StateStore::ReadBytes(const std::string& relative) const {
  const std::string path = (std::filesystem::path(dir_) / relative).string();
  if (!Exists(relative)) return absl::NotFoundError(absl::StrCat(path, " does not exist"));
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read ", path));
  return bytes;
}

absl::StatusOr<nlohmann::json> StateStore::ReadJson(const std::string& relative) const {
  ASSIGN_OR_RETURN(std::string text, ReadBytes(relative));
  nlohmann::json json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) {
    return absl::DataLossError(absl::StrCat((std::filesystem::path(dir_) / relative).string(),
                                            " is not a JSON object (corrupt state)"));
  }
  return json;
}

int StateStore::RemoveTempFiles() const {
  int removed = 0;
  std::error_code ec;
  std::vector<std::filesystem::path> temps;
  for (auto it = std::filesystem::recursive_directory_iterator(dir_, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file() && it->path().extension() == ".tmp") temps.push_back(it->path());
  }
  for (const auto& path : temps) removed += std::filesystem::remove(path, ec) ? 1 : 0;
  return removed;
}

std::vector<std::string> StateStore::RemoveOrphanUploads(int round, const std::set<std::string>& committed) const {
  std::vector<std::string> removed;
  const std::filesystem::path uploads = std::filesystem::path(dir_) / absl::StrCat("rounds/", round, "/uploads");
  std::error_code ec;
  std::vector<std::filesystem::path> orphans;
  for (auto it = std::filesystem::directory_iterator(uploads, ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    if (it->path().extension() != ".masks" && it->path().extension() != ".stats") continue;
    if (committed.count(it->path().stem().string()) == 0) orphans.push_back(it->path());
  }
  for (const auto& path : orphans) {
    if (std::filesystem::remove(path, ec)) removed.push_back(path.stem().string());
  }
  return removed;
}

std::string StateStore::RoundFile(int round) { return absl::StrCat("rounds/", round, "/round.json"); }
std::string StateStore::UploadFile(int round, const std::string& client) {
  return absl::StrCat("rounds/", round, "/uploads/", client, ".masks");
}
std::string StateStore::StatisticsFile(int round, const std::string& client) {
  return absl::StrCat("rounds/", round, "/uploads/", client, ".stats");
}
std::string StateStore::DecisionMaskFile(int round) { return absl::StrCat("rounds/", round, "/decision.masks"); }
std::string StateStore::DecisionScaleFile(int round) { return absl::StrCat("rounds/", round, "/decision.scales"); }

}  // namespace fedprllm
