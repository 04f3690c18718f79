// The upload spool file, the gRPC upload stream, and the uploader and watchdog threads that
// stream a round's payloads as they are computed.
#include "client/upload_stream.h"

#include <errno.h>
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "common/crash_point.h"
#include "common/crc32c.h"
#include "common/status_macros.h"

namespace fedprllm {
namespace {

constexpr char kLocalFailurePayload[] = "fedprllm/upload-local";
constexpr size_t kRecordPrefixBytes = 8;  // length + CRC32C

absl::Status LocalFailure(absl::string_view message) {
  absl::Status status = absl::FailedPreconditionError(message);
  status.SetPayload(kLocalFailurePayload, absl::Cord("1"));
  return status;
}

void PutLittleEndian32(uint32_t value, char* out) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>((value >> (8 * i)) & 0xFF);
}
uint32_t GetLittleEndian32(const char* in) {
  uint32_t value = 0;
  for (int i = 0; i < 4; ++i) value |= static_cast<uint32_t>(static_cast<unsigned char>(in[i])) << (8 * i);
  return value;
}

absl::Status ErrnoError(absl::string_view what) {
  return absl::InternalError(absl::StrCat("upload spool: ", what, ": ", strerror(errno)));
}

// An unnamed read-write file in `directory`: O_TMPFILE where the file system has it, else a
// unique name unlinked at once. -1 with errno set on failure.
int OpenUnnamedFile(const std::string& directory) {
#ifdef O_TMPFILE
  const int fd = open(directory.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0) return fd;
#endif
  std::string name = directory + "/fedprllm-upload-XXXXXX";
  const int named = mkostemp(name.data(), O_CLOEXEC);
  if (named < 0) return -1;
  if (unlink(name.c_str()) != 0) {
    const int saved = errno;
    close(named);
    errno = saved;
    return -1;
  }
  return named;
}

class GrpcUploadStream final : public UploadStream {
 public:
  GrpcUploadStream(std::shared_ptr<v1::FedPrLLM::Stub> stub, std::string session_token, int32_t round)
      : stub_(std::move(stub)), session_token_(std::move(session_token)), round_(round) {
    writer_ = stub_->UploadPayloads(&context_, &ack_);
  }

  bool Write(const v1::UploadChunk& message) override {
    if (!first_written_) {
      first_written_ = true;
      v1::UploadChunk first = message;
      first.set_session_token(session_token_);
      first.set_round(round_);
      return writer_->Write(first);
    }
    return writer_->Write(message);
  }

  absl::StatusOr<v1::UploadAck> Finish() override {
    if (!half_closed_) {
      half_closed_ = true;
      writer_->WritesDone();  // false when the call is already over; Finish says why
    }
    RETURN_IF_ERROR(FromGrpcStatus(writer_->Finish()));
    return ack_;
  }

  void Cancel() override { context_.TryCancel(); }

 private:
  const std::shared_ptr<v1::FedPrLLM::Stub> stub_;  // outlives the call
  const std::string session_token_;
  const int32_t round_;
  grpc::ClientContext context_;
  v1::UploadAck ack_;
  std::unique_ptr<grpc::ClientWriter<v1::UploadChunk>> writer_;
  bool first_written_ = false;
  bool half_closed_ = false;
};

}  // namespace

absl::StatusOr<std::vector<v1::UploadChunk>> PayloadMessages(EncodedPayload payload, const JobTensorTable& table) {
  std::vector<v1::UploadChunk> messages(1);
  messages.reserve(payload.chunks.size() + 1);
  RETURN_IF_ERROR(HeaderToProto(payload.header, table, messages[0].mutable_header()));
  for (PayloadChunk& c : payload.chunks) {
    v1::PayloadData* out = messages.emplace_back().mutable_chunk();
    std::string data = std::move(c.data);  // moved, not copied: one copy of the layer at a time
    c.data.clear();
    ChunkToProto(c, out);
    out->set_data(std::move(data));
  }
  return messages;
}

bool IsLocalUploadFailure(const absl::Status& status) { return status.GetPayload(kLocalFailurePayload).has_value(); }

std::unique_ptr<UploadStream> OpenGrpcUploadStream(std::shared_ptr<v1::FedPrLLM::Stub> stub,
                                                   std::string session_token, int32_t round) {
  return std::make_unique<GrpcUploadStream>(std::move(stub), std::move(session_token), round);
}

// ---- UploadSpool ------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<UploadSpool>> UploadSpool::Create(const std::string& directory) {
  std::string dir = directory;
  if (dir.empty()) {
    const char* tmpdir = std::getenv("TMPDIR");
    dir = tmpdir != nullptr && *tmpdir != '\0' ? tmpdir : "/tmp";
  }
  const int fd = OpenUnnamedFile(dir);
  if (fd < 0) return ErrnoError(absl::StrCat("cannot create a file in ", dir, " ($TMPDIR)"));
  return std::unique_ptr<UploadSpool>(new UploadSpool(fd, std::move(dir)));
}

UploadSpool::~UploadSpool() { close(fd_); }

absl::Status UploadSpool::Append(const v1::UploadChunk& message) {
  const size_t length = message.ByteSizeLong();
  if (length > UINT32_MAX - kRecordPrefixBytes) {
    return absl::InternalError(absl::StrCat("upload spool: a message of ", length, " bytes is too large"));
  }
  std::string record(kRecordPrefixBytes + length, '\0');
  if (!message.SerializeToArray(record.data() + kRecordPrefixBytes, static_cast<int>(length))) {
    return absl::InternalError("upload spool: cannot serialize a message");
  }
  PutLittleEndian32(static_cast<uint32_t>(length), record.data());
  PutLittleEndian32(crc32c::Value(record.data() + kRecordPrefixBytes, length), record.data() + 4);
  int64_t offset;
  {
    absl::MutexLock lock(&mu_);
    offset = end_;
  }
  // The only appending thread: nothing else writes at or after `offset`.
  for (size_t done = 0; done < record.size();) {
    const ssize_t n = pwrite(fd_, record.data() + done, record.size() - done, offset + static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return ErrnoError(absl::StrCat("cannot write ", record.size(), " bytes in ", directory_));
    done += static_cast<size_t>(n);
  }
  absl::MutexLock lock(&mu_);
  records_.push_back(Record{offset, static_cast<uint32_t>(length)});
  end_ = offset + static_cast<int64_t>(record.size());
  return absl::OkStatus();
}

absl::StatusOr<v1::UploadChunk> UploadSpool::Read(int64_t index) const {
  Record record;
  {
    absl::MutexLock lock(&mu_);
    if (index < 0 || index >= static_cast<int64_t>(records_.size())) {
      return absl::OutOfRangeError(
          absl::StrCat("upload spool: message ", index, " not appended (", records_.size(), " are)"));
    }
    record = records_[index];
  }
  std::string bytes(kRecordPrefixBytes + record.length, '\0');
  for (size_t done = 0; done < bytes.size();) {
    const ssize_t n = pread(fd_, bytes.data() + done, bytes.size() - done, record.offset + static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError(absl::StrCat("cannot read message ", index));
    if (n == 0) return absl::DataLossError(absl::StrCat("upload spool: message ", index, " is truncated"));
    done += static_cast<size_t>(n);
  }
  const char* body = bytes.data() + kRecordPrefixBytes;
  if (GetLittleEndian32(bytes.data()) != record.length ||
      GetLittleEndian32(bytes.data() + 4) != crc32c::Value(body, record.length)) {
    return absl::DataLossError(absl::StrCat("upload spool: message ", index, " fails its length or CRC32C check"));
  }
  v1::UploadChunk message;
  if (!message.ParseFromArray(body, static_cast<int>(record.length))) {
    return absl::DataLossError(absl::StrCat("upload spool: message ", index, " does not parse"));
  }
  return message;
}

int64_t UploadSpool::size() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(records_.size());
}

int64_t UploadSpool::file_bytes() const {
  absl::MutexLock lock(&mu_);
  return end_;
}

// ---- RoundUploader ----------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<RoundUploader>> RoundUploader::Start(Options options, StreamOpener open_stream,
                                                                    RetryLoop retry_loop) {
  ASSIGN_OR_RETURN(std::unique_ptr<UploadSpool> spool, UploadSpool::Create(options.spool_directory));
  std::unique_ptr<RoundUploader> uploader(
      new RoundUploader(std::move(options), std::move(spool), std::move(open_stream), std::move(retry_loop)));
  RoundUploader* self = uploader.get();
  uploader->uploader_ = std::thread([self] { self->RunUploader(); });
  uploader->watchdog_ = std::thread([self] { self->RunWatchdog(); });
  return uploader;
}

RoundUploader::RoundUploader(Options options, std::unique_ptr<UploadSpool> spool, StreamOpener open_stream,
                             RetryLoop retry_loop)
    : options_(std::move(options)),
      spool_(std::move(spool)),
      open_stream_(std::move(open_stream)),
      retry_loop_(std::move(retry_loop)) {}

RoundUploader::~RoundUploader() { Abort(absl::CancelledError("the round's upload was abandoned")); }

absl::Status RoundUploader::AddPayload(absl::Span<const v1::UploadChunk> messages) {
  {
    absl::MutexLock lock(&mu_);
    if (closed_ || abandoned_) return absl::FailedPreconditionError("AddPayload after Finish or Abort");
    if (uploader_done_) return result_->status();  // failed for good (it cannot succeed before Finish)
  }
  if (messages.empty()) return absl::FailedPreconditionError("AddPayload: a payload has at least a header");
  for (const v1::UploadChunk& m : messages) RETURN_IF_ERROR(spool_->Append(m));
  absl::MutexLock lock(&mu_);
  const int64_t first = appended_;
  const int payload = payloads_++;
  appended_ += static_cast<int64_t>(messages.size());
  if (options_.expected_payloads <= 1 && payload == 0) {
    crash_message_ = static_cast<int64_t>(messages.size()) / 2;
  } else if (options_.expected_payloads > 1 && payload == options_.expected_payloads / 2) {
    crash_message_ = first;
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::UploadAck> RoundUploader::Finish() {
  {
    absl::MutexLock lock(&mu_);
    if (closed_ || abandoned_) return absl::FailedPreconditionError("Finish called twice, or after Abort");
    closed_ = true;
  }
  Join();
  absl::MutexLock lock(&mu_);
  return *result_;
}

void RoundUploader::Abort(const absl::Status& why) {
  std::shared_ptr<UploadStream> stream;
  bool abandoned_now = false;
  {
    absl::MutexLock lock(&mu_);
    if (!abandoned_ && !uploader_done_) {
      abandoned_ = true;
      abandoned_status_ = why;
      stream = stream_;
      abandoned_now = true;
    }
  }
  if (abandoned_now) abandoned_note_.Notify();
  if (stream != nullptr) stream->Cancel();  // outside mu_: a gRPC call
  Join();
}

void RoundUploader::Join() {
  if (joined_) return;
  joined_ = true;
  if (uploader_.joinable()) uploader_.join();
  if (watchdog_.joinable()) watchdog_.join();
}

int RoundUploader::attempts() const {
  absl::MutexLock lock(&mu_);
  return attempts_;
}

int64_t RoundUploader::keepalives_sent() const {
  absl::MutexLock lock(&mu_);
  return keepalives_;
}

void RoundUploader::RunUploader() {
  absl::StatusOr<v1::UploadAck> result;
  bool nothing = false;
  {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(this, &RoundUploader::HasPayloadOrEnd));
    if (abandoned_) {
      result = abandoned_status_;
      nothing = true;
    } else if (appended_ == 0) {
      result = absl::InvalidArgumentError("the round's upload has no payload");
      nothing = true;
    }
  }
  if (!nothing) {
    UploadAttempts attempts;
    attempts.run = [this] { return Attempt(); };
    attempts.progressed = [this] { return attempt_progressed_; };
    attempts.abandoned = &abandoned_note_;
    result = retry_loop_(attempts);
  }
  absl::MutexLock lock(&mu_);
  if (abandoned_) result = abandoned_status_;  // whatever the last attempt saw
  result_ = std::move(result);
  uploader_done_ = true;
}

void RoundUploader::RunWatchdog() {
  const absl::Duration tick = std::min(absl::Seconds(1), options_.stall_timeout / 4);
  const auto stall = std::chrono::nanoseconds(absl::ToInt64Nanoseconds(options_.stall_timeout));
  absl::MutexLock lock(&mu_);
  while (!mu_.AwaitWithTimeout(absl::Condition(this, &RoundUploader::UploaderDone), tick)) {
    if (!call_since_.has_value() || stalled_ || stream_ == nullptr || Clock::now() - *call_since_ < stall) continue;
    stalled_ = true;
    std::shared_ptr<UploadStream> stream = stream_;
    mu_.Unlock();
    stream->Cancel();  // outside mu_: a gRPC call
    mu_.Lock();
  }
}

bool RoundUploader::WatchedWrite(UploadStream& stream, const v1::UploadChunk& message) {
  {
    absl::MutexLock lock(&mu_);
    call_since_ = Clock::now();
  }
  const bool ok = stream.Write(message);
  absl::MutexLock lock(&mu_);
  call_since_.reset();
  return ok;
}

absl::StatusOr<v1::UploadAck> RoundUploader::WatchedFinish(UploadStream& stream) {
  {
    absl::MutexLock lock(&mu_);
    call_since_ = Clock::now();
  }
  absl::StatusOr<v1::UploadAck> result = stream.Finish();
  absl::MutexLock lock(&mu_);
  call_since_.reset();
  if (abandoned_) return LocalFailure(absl::StrCat("upload abandoned: ", abandoned_status_.ToString()));
  if (stalled_) {
    return absl::DeadlineExceededError(absl::StrCat("the server took nothing for ",
                                                    absl::FormatDuration(options_.stall_timeout),
                                                    " (rpc_timeout_seconds); the upload stream was cancelled"));
  }
  return result;
}

absl::StatusOr<v1::UploadAck> RoundUploader::Attempt() {
  attempt_progressed_ = false;
  {
    absl::MutexLock lock(&mu_);
    if (abandoned_) return LocalFailure(absl::StrCat("upload abandoned: ", abandoned_status_.ToString()));
    stalled_ = false;
    next_message_ = 0;
  }
  ASSIGN_OR_RETURN(std::unique_ptr<UploadStream> opened, open_stream_());
  const std::shared_ptr<UploadStream> stream(std::move(opened));
  {
    absl::MutexLock lock(&mu_);
    if (abandoned_) return LocalFailure(absl::StrCat("upload abandoned: ", abandoned_status_.ToString()));
    stream_ = stream;
    ++attempts_;
  }
  auto forget_stream = absl::MakeCleanup([this] {
    absl::MutexLock lock(&mu_);
    stream_.reset();
  });
  const Clock::time_point opened_at = Clock::now();
  const auto keepalive_interval = std::chrono::nanoseconds(absl::ToInt64Nanoseconds(options_.keepalive_interval));
  Clock::time_point last_write = opened_at;
  int64_t keepalives = 0;  // on this stream
  int64_t next = 0;
  while (true) {
    enum class Action { kSend, kKeepalive, kClose, kAbandon } action;
    int64_t crash_message;
    {
      absl::MutexLock lock(&mu_);
      // The next keepalive is due after keepalive_interval of silence, and allowed once the
      // stream is old enough: the k-th (1-based) at k - 9 s of age, one second before the
      // server's bound of age + 10.
      const Clock::time_point due =
          std::max(last_write + keepalive_interval, opened_at + std::chrono::seconds(keepalives + 1 - 9));
      const auto wait = std::chrono::duration_cast<std::chrono::nanoseconds>(due - Clock::now());
      const bool woken = mu_.AwaitWithTimeout(absl::Condition(this, &RoundUploader::UploaderHasWork),
                                              absl::Nanoseconds(std::max<int64_t>(0, wait.count())));
      if (abandoned_) {
        action = Action::kAbandon;
      } else if (next < appended_) {
        action = Action::kSend;
      } else if (closed_) {
        action = Action::kClose;
      } else if (!woken) {
        action = Action::kKeepalive;  // between payloads: every appended payload was sent
      } else {
        continue;
      }
      crash_message = crash_message_;
    }
    if (action == Action::kAbandon) {
      stream->Cancel();
      (void)stream->Finish();
      absl::MutexLock lock(&mu_);
      return LocalFailure(absl::StrCat("upload abandoned: ", abandoned_status_.ToString()));
    }
    if (action == Action::kClose) return WatchedFinish(*stream);
    v1::UploadChunk message;
    if (action == Action::kSend) {
      absl::StatusOr<v1::UploadChunk> read = spool_->Read(next);
      if (!read.ok()) {
        stream->Cancel();
        (void)stream->Finish();
        return LocalFailure(read.status().ToString());
      }
      message = *std::move(read);
      if (next == crash_message) CrashPoint("client-upload-half");
    } else {
      message.set_keepalive(true);
    }
    if (!WatchedWrite(*stream, message)) break;  // the call is over; Finish says why
    last_write = Clock::now();
    if (action == Action::kSend) {
      ++next;
      if (next > high_water_) {
        high_water_ = next;
        attempt_progressed_ = true;
      }
    } else {
      ++keepalives;
      attempt_progressed_ = true;
      absl::MutexLock lock(&mu_);
      ++keepalives_;
    }
    absl::MutexLock lock(&mu_);
    next_message_ = next;
  }
  absl::StatusOr<v1::UploadAck> finished = WatchedFinish(*stream);
  if (finished.ok()) {
    return absl::UnavailableError("the upload stream ended before all of its messages were written");
  }
  return finished;
}

}  // namespace fedprllm
