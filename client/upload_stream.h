// A round's upload while the round is still being computed (docs/round_protocol.md §4 step 4):
// the client hands over one payload (one decoder layer's masks) at a time; each is appended
// to a local spool file and written to one UploadPayloads stream by an uploader thread, which
// sends keepalives between payloads while the next layer is computed. A transient failure
// opens a fresh stream that re-sends the spool from its start, then continues live, so a
// retry never needs the masks in memory. Client memory stays at one layer's masks and
// encoding (the caller's) plus one message (the uploader's); the round's encoded bytes are
// on disk only.
//
//   RoundUploader::Options options;
//   options.expected_payloads = num_layers;
//   ASSIGN_OR_RETURN(std::unique_ptr<RoundUploader> upload,
//                    RoundUploader::Start(options, open_stream, retry_loop));
//   for each layer {
//     ASSIGN_OR_RETURN(EncodedPayload p, EncodeMasks(layer_masks, pattern, max_chunk_bytes));
//     ASSIGN_OR_RETURN(std::vector<v1::UploadChunk> m, PayloadMessages(std::move(p), table));
//     RETURN_IF_ERROR(upload->AddPayload(m));   // returns at once; the stream carries it
//   }
//   ASSIGN_OR_RETURN(v1::UploadAck ack, upload->Finish());  // drains, closes, waits
//   // An early return destroys `upload`, which cancels its stream: nothing is committed.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/mask_codec.h"
#include "proto/fedprllm.grpc.pb.h"
#include "proto/payload_convert.h"

namespace fedprllm {

// One payload as upload messages: its header, then its chunks, with neither session token
// nor round (the stream sets them on its first message). Moves the chunk data out of
// `payload`. Fails (NOT_FOUND) only for a tensor outside `table`.
absl::StatusOr<std::vector<v1::UploadChunk>> PayloadMessages(EncodedPayload payload, const JobTensorTable& table);

// An append-only file of UploadChunk messages, unnamed in its directory (O_TMPFILE, or
// created and unlinked at once), so that nothing of it outlives the process, a crash
// included. Record format, back to back from offset 0:
//   uint32 little-endian  length of the message's protobuf encoding, in bytes
//   uint32 little-endian  CRC32C (common/crc32c.h) of those bytes
//   the protobuf encoding
// Thread-safe: one thread appends while others read records already appended.
class UploadSpool {
 public:
  // A new, empty spool in `directory`; "" = $TMPDIR, or /tmp where it is unset. The
  // directory should be on disk: the spool holds a whole round's encoded masks (about
  // 1 bit per weight; ~0.8 GB for LLaMA-7B). INTERNAL when it cannot be created.
  static absl::StatusOr<std::unique_ptr<UploadSpool>> Create(const std::string& directory = "");
  ~UploadSpool();  // closes the file, which frees its space
  UploadSpool(const UploadSpool&) = delete;
  UploadSpool& operator=(const UploadSpool&) = delete;

  // Appends `message`. Once it returns OK, Read(size() - 1) gives it back. One appending
  // thread at a time. INTERNAL on an I/O error (the spool is then unusable).
  absl::Status Append(const v1::UploadChunk& message);
  // Record `index`, 0 <= index < size(), read back from the file and checked: DATA_LOSS for
  // a short read, a length or CRC32C mismatch or an encoding that does not parse;
  // OUT_OF_RANGE for an index not appended.
  absl::StatusOr<v1::UploadChunk> Read(int64_t index) const;
  // Records appended so far, and the file's size in bytes.
  int64_t size() const;
  int64_t file_bytes() const;
  // The directory the spool was created in.
  const std::string& directory() const { return directory_; }

 private:
  struct Record {
    int64_t offset = 0;  // of the record's length field
    uint32_t length = 0;
  };
  UploadSpool(int fd, std::string directory) : fd_(fd), directory_(std::move(directory)) {}

  const int fd_;
  const std::string directory_;
  mutable absl::Mutex mu_;
  std::vector<Record> records_ ABSL_GUARDED_BY(mu_);
  int64_t end_ ABSL_GUARDED_BY(mu_) = 0;
};

// The client's end of one UploadPayloads call: a seam so that RoundUploader can be tested
// without a server.
class UploadStream {
 public:
  virtual ~UploadStream() = default;
  // Writes one message; blocks while flow control holds it back. False when the call is
  // over (the server ended it, or Cancel()); Finish() then says why.
  virtual bool Write(const v1::UploadChunk& message) = 0;
  // Half-closes the stream (once) and waits for the server's answer.
  virtual absl::StatusOr<v1::UploadAck> Finish() = 0;
  // From any thread, at any time: ends the call, so that a blocked Write or Finish returns
  // (Finish with CANCELLED). The server commits nothing of a cancelled stream.
  virtual void Cancel() = 0;
};

// A fresh UploadPayloads call on `stub` (kept alive by the stream) with no deadline (the
// caller bounds it; RoundUploader::Options::stall_timeout). Its first message is sent with
// `session_token` and `round` set; later ones as given.
std::unique_ptr<UploadStream> OpenGrpcUploadStream(std::shared_ptr<v1::FedPrLLM::Stub> stub,
                                                   std::string session_token, int32_t round);

// What the retry policy gets from RoundUploader (see RoundUploader::RetryLoop).
struct UploadAttempts {
  // One attempt: a fresh stream that re-sends every spooled message from the start, then
  // continues live until Finish() was called, closes and returns the server's answer.
  // Errors: the server's, DEADLINE_EXCEEDED for a stalled stream (Options::stall_timeout),
  // UNAVAILABLE for a stream that ended early without a status; and with kLocalUploadFailure
  // set (see IsLocalUploadFailure), FAILED_PRECONDITION when the upload was abandoned or the
  // spool cannot be read. Local failures are never worth retrying.
  std::function<absl::StatusOr<v1::UploadAck>()> run;
  // After a failed `run`: whether that attempt got further than every earlier one (wrote a
  // message no earlier stream had, or a keepalive at the live end). The retry policy then
  // starts its failure streak and backoff anew.
  std::function<bool()> progressed;
  // Notified when the upload is abandoned: the policy stops sleeping and returns.
  const absl::Notification* abandoned = nullptr;
};

// True for a failure of this client (abandoned upload, unreadable spool), not the server's.
bool IsLocalUploadFailure(const absl::Status& status);

// Streams one round's payloads to the server as the caller computes them. The caller (the
// producer) calls AddPayload once per payload, then Finish(), from one thread. An uploader
// thread owns the stream; a watchdog thread cancels a stalled one.
//
// The stream is opened when the first payload is added. Keepalives (UploadChunk.keepalive)
// are sent only between payloads, every keepalive_interval of silence, and never more than
// one per second of the stream's age plus 9 (the server allows 10; one spare for the delay
// between the client's and the server's start of the stream).
//
// Crash point "client-upload-half" (common/crash_point.h) fires once per stream, before
// the message that is halfway through the round: the first message of payload
// expected_payloads / 2 (so at least one whole payload was sent), or with one payload, its
// message number (messages / 2).
class RoundUploader {
 public:
  struct Options {
    // Payloads the round will carry (decoder layers): places the crash point. Default 1.
    int expected_payloads = 1;
    // Silence after which a keepalive is sent while waiting for the next payload: the job's
    // upload_idle_timeout_seconds / 3. Default 20 s.
    absl::Duration keepalive_interval = absl::Seconds(20);
    // A Write, or the closing Finish, that has not returned for this long cancels the stream
    // (the attempt fails with DEADLINE_EXCEEDED, which is retried). A stream lives as long as
    // the round's compute, so there is no deadline from its start: only the server not taking
    // what was handed to it counts. The client's rpc_timeout_seconds. Default 600 s.
    absl::Duration stall_timeout = absl::Seconds(600);
    // Where the spool file is created (UploadSpool::Create). Default "" = $TMPDIR or /tmp.
    std::string spool_directory;
  };
  // Opens one stream per attempt.
  using StreamOpener = std::function<absl::StatusOr<std::unique_ptr<UploadStream>>()>;
  // The retry policy: runs `attempts.run` until it succeeds or fails for good, and returns
  // the last result. Called once, on the uploader thread, after the first payload.
  using RetryLoop = std::function<absl::StatusOr<v1::UploadAck>(const UploadAttempts& attempts)>;

  // Creates the spool and starts the threads. INTERNAL when the spool cannot be created.
  static absl::StatusOr<std::unique_ptr<RoundUploader>> Start(Options options, StreamOpener open_stream,
                                                              RetryLoop retry_loop);
  // Abandons the upload unless Finish() returned: cancels the stream in flight (nothing of
  // it is committed) and joins the threads.
  ~RoundUploader();
  RoundUploader(const RoundUploader&) = delete;
  RoundUploader& operator=(const RoundUploader&) = delete;

  // Appends one payload's messages (PayloadMessages) to the spool and returns; the uploader
  // sends them. Errors: the upload's own final error once it has failed for good (stop
  // computing: the round will not take this upload), INTERNAL when the spool cannot be
  // written, FAILED_PRECONDITION after Finish() or Abort() or for no messages.
  absl::Status AddPayload(absl::Span<const v1::UploadChunk> messages);
  // No more payloads: waits until the uploader has sent the rest, closed the stream and got
  // the server's answer (after retries), and returns it. Errors as the retry policy's;
  // INVALID_ARGUMENT when no payload was added. Call at most once.
  absl::StatusOr<v1::UploadAck> Finish();
  // Abandons the upload (e.g. the round's compute failed): cancels the stream in flight, so
  // that the server commits nothing of it, and joins the threads. `why` is the upload's
  // result. Idempotent; does nothing after Finish() returned.
  void Abort(const absl::Status& why);

  // For the round's summary line, after Finish(): streams opened, keepalives sent, and the
  // spool's messages and bytes.
  int attempts() const;
  int64_t keepalives_sent() const;
  int64_t messages() const { return spool_->size(); }
  int64_t spool_bytes() const { return spool_->file_bytes(); }

 private:
  using Clock = std::chrono::steady_clock;
  RoundUploader(Options options, std::unique_ptr<UploadSpool> spool, StreamOpener open_stream, RetryLoop retry_loop);

  void RunUploader();  // the uploader thread
  void RunWatchdog();  // the watchdog thread
  absl::StatusOr<v1::UploadAck> Attempt();
  // Write or Finish on `stream`, watched by the watchdog.
  bool WatchedWrite(UploadStream& stream, const v1::UploadChunk& message);
  absl::StatusOr<v1::UploadAck> WatchedFinish(UploadStream& stream);
  void Join();

  bool UploaderHasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return next_message_ < appended_ || closed_ || abandoned_;
  }
  bool UploaderDone() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return uploader_done_; }
  bool HasPayloadOrEnd() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return appended_ > 0 || closed_ || abandoned_; }

  const Options options_;
  const std::unique_ptr<UploadSpool> spool_;
  const StreamOpener open_stream_;
  const RetryLoop retry_loop_;
  absl::Notification abandoned_note_;  // notified with abandoned_

  mutable absl::Mutex mu_;
  // Producer side.
  int64_t appended_ ABSL_GUARDED_BY(mu_) = 0;       // spooled messages, whole payloads only
  int payloads_ ABSL_GUARDED_BY(mu_) = 0;           // payloads added
  int64_t crash_message_ ABSL_GUARDED_BY(mu_) = -1;  // where the crash point fires; -1 unknown
  bool closed_ ABSL_GUARDED_BY(mu_) = false;        // Finish() called
  bool abandoned_ ABSL_GUARDED_BY(mu_) = false;     // Abort() called
  absl::Status abandoned_status_ ABSL_GUARDED_BY(mu_);
  // Uploader side.
  int64_t next_message_ ABSL_GUARDED_BY(mu_) = 0;  // of the current attempt's stream
  std::shared_ptr<UploadStream> stream_ ABSL_GUARDED_BY(mu_);  // the current attempt's
  std::optional<Clock::time_point> call_since_ ABSL_GUARDED_BY(mu_);  // a Write/Finish in progress since
  bool stalled_ ABSL_GUARDED_BY(mu_) = false;  // the watchdog cancelled the current stream
  int attempts_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t keepalives_ ABSL_GUARDED_BY(mu_) = 0;
  bool uploader_done_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<absl::StatusOr<v1::UploadAck>> result_ ABSL_GUARDED_BY(mu_);  // once uploader_done_
  // Only the uploader thread touches these.
  int64_t high_water_ = 0;         // most payload messages any stream has written
  bool attempt_progressed_ = false;

  std::thread uploader_;
  std::thread watchdog_;
  bool joined_ = false;  // the producer thread's
};

}  // namespace fedprllm
