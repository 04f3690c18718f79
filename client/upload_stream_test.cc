// Unit tests of the round's streaming upload without a server: the spool file, and the
// uploader against a scripted stream (live payloads, keepalives between them, retries that
// re-send the spool, stalls, abandonment, permanent refusals).
#include "client/upload_stream.h"

#include <dirent.h>
#include <stdlib.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "client/federation_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fedprllm {
namespace {

using ::testing::HasSubstr;

// A fresh empty directory under the test's temporary directory.
std::string MakeTempDir() {
  std::string pattern = ::testing::TempDir() + "/upload-spool-XXXXXX";
  EXPECT_NE(mkdtemp(pattern.data()), nullptr);
  return pattern;
}

int EntriesIn(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return -1;
  int n = 0;
  while (dirent* e = readdir(d)) n += std::string(e->d_name) != "." && std::string(e->d_name) != ".." ? 1 : 0;
  closedir(d);
  return n;
}

// A payload's messages: a header naming tensor `tensor`, then `chunks` chunks of 100 bytes.
std::vector<v1::UploadChunk> FakePayload(int tensor, int chunks) {
  std::vector<v1::UploadChunk> messages(1);
  messages[0].mutable_header()->add_tensor_indices(tensor);
  for (int c = 0; c < chunks; ++c) {
    v1::PayloadData* d = messages.emplace_back().mutable_chunk();
    d->set_chunk_index(c);
    d->set_data(std::string(100, static_cast<char>('a' + (tensor + c) % 26)));
    d->set_last(c + 1 == chunks);
  }
  return messages;
}

TEST(UploadSpoolTest, RoundTripsMessagesAndLeavesNoFileBehind) {
  const std::string dir = MakeTempDir();
  absl::StatusOr<std::unique_ptr<UploadSpool>> spool = UploadSpool::Create(dir);
  ASSERT_TRUE(spool.ok()) << spool.status();
  std::vector<v1::UploadChunk> written = FakePayload(3, 2);
  std::string binary(1 << 20, '\0');
  for (size_t i = 0; i < binary.size(); ++i) binary[i] = static_cast<char>(i * 131 % 256);
  written[1].mutable_chunk()->set_data(binary);
  written.emplace_back().set_keepalive(true);
  written[0].set_session_token("token");
  written[0].set_round(7);
  int64_t bytes = 0;
  for (const v1::UploadChunk& m : written) {
    ASSERT_TRUE((*spool)->Append(m).ok());
    bytes += 8 + static_cast<int64_t>(m.ByteSizeLong());
  }
  EXPECT_EQ(EntriesIn(dir), 0) << "the spool file must have no name";
  EXPECT_EQ((*spool)->size(), static_cast<int64_t>(written.size()));
  EXPECT_EQ((*spool)->file_bytes(), bytes);
  for (size_t i = 0; i < written.size(); ++i) {
    absl::StatusOr<v1::UploadChunk> back = (*spool)->Read(static_cast<int64_t>(i));
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->SerializeAsString(), written[i].SerializeAsString()) << i;
  }
  EXPECT_EQ((*spool)->Read(static_cast<int64_t>(written.size())).status().code(), absl::StatusCode::kOutOfRange);
  spool->reset();
  EXPECT_EQ(EntriesIn(dir), 0);
  EXPECT_EQ(UploadSpool::Create(dir + "/missing").status().code(), absl::StatusCode::kInternal);
}

TEST(UploadStreamTest, PayloadMessagesCarryTheEncodingExactly) {
  v1::JobSpec job;
  v1::TensorSpec* t = job.add_tensors();
  t->set_name("model.layers.0.mlp.up_proj.weight");
  t->add_shape(8);
  t->add_shape(16);
  PackedMask mask({8, 16});
  for (int i = 0; i < 128; i += 3) mask.Set(i, true);
  absl::StatusOr<EncodedPayload> payload = EncodeMask(t->name(), mask, {}, 5);
  ASSERT_TRUE(payload.ok()) << payload.status();
  const EncodedPayload copy = *payload;
  absl::StatusOr<std::vector<v1::UploadChunk>> messages = PayloadMessages(*std::move(payload), JobTensorTable(job));
  ASSERT_TRUE(messages.ok()) << messages.status();
  ASSERT_EQ(messages->size(), copy.chunks.size() + 1);
  EXPECT_EQ((*messages)[0].header().tensor_indices(0), 0);
  EXPECT_TRUE((*messages)[0].session_token().empty());
  for (size_t i = 0; i < copy.chunks.size(); ++i) {
    const v1::PayloadData& c = (*messages)[i + 1].chunk();
    EXPECT_EQ(c.data(), copy.chunks[i].data);
    EXPECT_EQ(c.crc32c(), copy.chunks[i].crc32c);
    EXPECT_EQ(c.last(), copy.chunks[i].last);
  }
}

// What one scripted stream does.
struct Script {
  int fail_at = -1;   // this write (0-based) returns false; Finish then returns `failure`
  int block_at = -1;  // this write blocks until Cancel
  absl::Status failure = absl::UnavailableError("connection reset");
};

// The server side of the fake: scripts per attempt (the last one repeats) and what each
// stream received.
class FakeServer {
 public:
  explicit FakeServer(std::vector<Script> scripts) : scripts_(std::move(scripts)) {}

  RoundUploader::StreamOpener Opener();

  std::vector<v1::UploadChunk> Received(size_t stream) {
    absl::MutexLock lock(&mu_);
    return stream < received_.size() ? received_[stream] : std::vector<v1::UploadChunk>{};
  }
  size_t Streams() {
    absl::MutexLock lock(&mu_);
    return received_.size();
  }
  int Commits() {
    absl::MutexLock lock(&mu_);
    return commits_;
  }
  int Cancels() {
    absl::MutexLock lock(&mu_);
    return cancels_;
  }
  // Waits (up to 10 s) until stream `stream` has received `count` messages.
  bool WaitForMessages(size_t stream, size_t count) {
    for (int i = 0; i < 2000; ++i) {
      if (Received(stream).size() >= count) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
  }

 private:
  friend class FakeStream;
  absl::Mutex mu_;
  std::vector<Script> scripts_;
  std::vector<std::vector<v1::UploadChunk>> received_ ABSL_GUARDED_BY(mu_);
  int commits_ ABSL_GUARDED_BY(mu_) = 0;
  int cancels_ ABSL_GUARDED_BY(mu_) = 0;
};

class FakeStream final : public UploadStream {
 public:
  FakeStream(FakeServer* server, Script script, size_t index) : server_(server), script_(script), index_(index) {}

  bool Write(const v1::UploadChunk& message) override {
    absl::MutexLock lock(&server_->mu_);
    const int n = writes_++;
    if (cancelled_ || broken_) return false;
    if (n == script_.block_at) {
      server_->mu_.Await(absl::Condition(&cancelled_));
      return false;
    }
    if (n == script_.fail_at) {
      broken_ = true;
      return false;
    }
    server_->received_[index_].push_back(message);
    return true;
  }

  absl::StatusOr<v1::UploadAck> Finish() override {
    absl::MutexLock lock(&server_->mu_);
    if (cancelled_) return absl::CancelledError("cancelled");
    if (broken_) return script_.failure;
    ++server_->commits_;
    v1::UploadAck ack;
    ack.set_clients_committed(1);
    return ack;
  }

  void Cancel() override {
    absl::MutexLock lock(&server_->mu_);
    if (!cancelled_) ++server_->cancels_;
    cancelled_ = true;
  }

 private:
  FakeServer* const server_;
  const Script script_;
  const size_t index_;
  int writes_ = 0;
  bool broken_ = false;
  bool cancelled_ = false;
};

RoundUploader::StreamOpener FakeServer::Opener() {
  return [this]() -> absl::StatusOr<std::unique_ptr<UploadStream>> {
    absl::MutexLock lock(&mu_);
    const size_t index = received_.size();
    received_.emplace_back();
    return std::unique_ptr<UploadStream>(
        std::make_unique<FakeStream>(this, scripts_[std::min(index, scripts_.size() - 1)], index));
  };
}

// Retries transient failures up to 5 attempts, without backoff; records every failure.
RoundUploader::RetryLoop Retries(std::vector<absl::Status>* failures) {
  return [failures](const UploadAttempts& attempts) {
    absl::StatusOr<v1::UploadAck> result;
    for (int i = 0; i < 5; ++i) {
      result = attempts.run();
      if (result.ok() || !IsTransient(result.status())) return result;
      failures->push_back(result.status());
      attempts.progressed();
      if (attempts.abandoned->HasBeenNotified()) return result;
    }
    return result;
  };
}

RoundUploader::Options TestOptions() {
  RoundUploader::Options options;
  options.expected_payloads = 3;
  options.spool_directory = ::testing::TempDir();
  return options;
}

std::vector<v1::UploadChunk> Concat(const std::vector<std::vector<v1::UploadChunk>>& payloads) {
  std::vector<v1::UploadChunk> out;
  for (const auto& p : payloads) out.insert(out.end(), p.begin(), p.end());
  return out;
}

void ExpectSameMessages(const std::vector<v1::UploadChunk>& got, const std::vector<v1::UploadChunk>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i].SerializeAsString(), want[i].SerializeAsString()) << i;
}

TEST(RoundUploaderTest, SendsEachPayloadBeforeTheNextIsComputed) {
  FakeServer server({Script{}});
  std::vector<absl::Status> failures;
  auto uploader = RoundUploader::Start(TestOptions(), server.Opener(), Retries(&failures));
  ASSERT_TRUE(uploader.ok()) << uploader.status();
  const std::vector<std::vector<v1::UploadChunk>> payloads = {FakePayload(0, 2), FakePayload(1, 3), FakePayload(2, 1)};
  size_t sent = 0;
  for (const auto& p : payloads) {
    ASSERT_TRUE((*uploader)->AddPayload(p).ok());
    sent += p.size();
    // The stream carries this payload while the caller "computes" the next one.
    ASSERT_TRUE(server.WaitForMessages(0, sent)) << sent;
  }
  absl::StatusOr<v1::UploadAck> ack = (*uploader)->Finish();
  ASSERT_TRUE(ack.ok()) << ack.status();
  EXPECT_EQ(server.Streams(), 1u);
  EXPECT_EQ(server.Commits(), 1);
  ExpectSameMessages(server.Received(0), Concat(payloads));
  EXPECT_EQ((*uploader)->attempts(), 1);
  EXPECT_EQ((*uploader)->messages(), static_cast<int64_t>(sent));
  EXPECT_TRUE(failures.empty());
  EXPECT_EQ((*uploader)->AddPayload(payloads[0]).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(RoundUploaderTest, KeepalivesOnlyBetweenPayloadsAndWithinTheServersAllowance) {
  FakeServer server({Script{}});
  std::vector<absl::Status> failures;
  RoundUploader::Options options = TestOptions();
  options.keepalive_interval = absl::Milliseconds(30);
  auto uploader = RoundUploader::Start(options, server.Opener(), Retries(&failures));
  ASSERT_TRUE(uploader.ok()) << uploader.status();
  ASSERT_TRUE((*uploader)->AddPayload(FakePayload(0, 3)).ok());
  // Wanted every 30 ms, but at most one per second of age plus 9: 9 in the first 0.5 s.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  ASSERT_TRUE((*uploader)->AddPayload(FakePayload(1, 3)).ok());
  ASSERT_TRUE((*uploader)->Finish().ok());
  const std::vector<v1::UploadChunk> got = server.Received(0);
  int keepalives = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!got[i].keepalive()) continue;
    ++keepalives;
    EXPECT_GE(i, 4u) << "keepalive before the first payload ended";
    EXPECT_TRUE(got[i + 1].keepalive() || got[i + 1].has_header()) << "keepalive inside a payload at " << i;
  }
  EXPECT_EQ(keepalives, 9);
  EXPECT_EQ((*uploader)->keepalives_sent(), 9);
  EXPECT_EQ(got.size(), 8u + 9u);
}

TEST(RoundUploaderTest, ARetryResendsTheSpoolFromTheStart) {
  FakeServer server({Script{/*fail_at=*/4}, Script{}});
  std::vector<absl::Status> failures;
  auto uploader = RoundUploader::Start(TestOptions(), server.Opener(), Retries(&failures));
  ASSERT_TRUE(uploader.ok()) << uploader.status();
  const std::vector<std::vector<v1::UploadChunk>> payloads = {FakePayload(0, 2), FakePayload(1, 2), FakePayload(2, 2)};
  for (const auto& p : payloads) ASSERT_TRUE((*uploader)->AddPayload(p).ok());
  ASSERT_TRUE((*uploader)->Finish().ok());
  EXPECT_EQ(server.Streams(), 2u);
  EXPECT_EQ(server.Received(0).size(), 4u);
  ExpectSameMessages(server.Received(1), Concat(payloads));
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_EQ(failures[0].code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ((*uploader)->attempts(), 2);
}

TEST(RoundUploaderTest, AStalledStreamIsCancelledAndRetried) {
  FakeServer server({Script{-1, /*block_at=*/1}, Script{}});
  std::vector<absl::Status> failures;
  RoundUploader::Options options = TestOptions();
  options.stall_timeout = absl::Milliseconds(200);
  auto uploader = RoundUploader::Start(options, server.Opener(), Retries(&failures));
  ASSERT_TRUE(uploader.ok()) << uploader.status();
  ASSERT_TRUE((*uploader)->AddPayload(FakePayload(0, 2)).ok());
  ASSERT_TRUE((*uploader)->Finish().ok());
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_EQ(failures[0].code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(failures[0].message()), HasSubstr("rpc_timeout_seconds"));
  ExpectSameMessages(server.Received(1), FakePayload(0, 2));
  EXPECT_EQ(server.Commits(), 1);
}

TEST(RoundUploaderTest, AnAbandonedUploadCancelsItsStreamAndCommitsNothing) {
  // Between payloads: the caller's compute failed.
  {
    FakeServer server({Script{}});
    std::vector<absl::Status> failures;
    auto uploader = RoundUploader::Start(TestOptions(), server.Opener(), Retries(&failures));
    ASSERT_TRUE(uploader.ok()) << uploader.status();
    ASSERT_TRUE((*uploader)->AddPayload(FakePayload(0, 2)).ok());
    ASSERT_TRUE(server.WaitForMessages(0, 3));
    uploader->reset();  // an early return of the round
    EXPECT_EQ(server.Cancels(), 1);
    EXPECT_EQ(server.Commits(), 0);
  }
  // While a write is blocked (no stall timeout soon): Abort returns at once.
  {
    FakeServer server({Script{-1, /*block_at=*/0}});
    std::vector<absl::Status> failures;
    auto uploader = RoundUploader::Start(TestOptions(), server.Opener(), Retries(&failures));
    ASSERT_TRUE(uploader.ok()) << uploader.status();
    ASSERT_TRUE((*uploader)->AddPayload(FakePayload(0, 2)).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const auto start = std::chrono::steady_clock::now();
    (*uploader)->Abort(absl::InternalError("layer 3 failed"));
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
    EXPECT_EQ(server.Commits(), 0);
    EXPECT_EQ((*uploader)->Finish().status().code(), absl::StatusCode::kFailedPrecondition);
  }
}

TEST(RoundUploaderTest, APermanentRefusalStopsTheProducer) {
  FakeServer server({Script{/*fail_at=*/1, -1, absl::FailedPreconditionError("round 0 is closed")}});
  std::vector<absl::Status> failures;
  auto uploader = RoundUploader::Start(TestOptions(), server.Opener(), Retries(&failures));
  ASSERT_TRUE(uploader.ok()) << uploader.status();
  ASSERT_TRUE((*uploader)->AddPayload(FakePayload(0, 2)).ok());
  absl::Status added;
  for (int i = 0; i < 500 && added.ok(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    added = (*uploader)->AddPayload(FakePayload(1, 1));
  }
  EXPECT_EQ(added.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(added.message()), HasSubstr("round 0 is closed"));
  EXPECT_FALSE(IsLocalUploadFailure(added));
  EXPECT_EQ(server.Streams(), 1u);
}

}  // namespace
}  // namespace fedprllm
