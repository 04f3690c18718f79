// End-to-end defence of the vote (docs/robustness.md): a real fedprllm-server over mutual TLS
// on loopback, two honest fedprllm-client daemons (site-a, site-b) and a hand-written client
// (site-d) that sends well-formed but implausible masks. Masks with the wrong per-row
// sparsity, and an N:M violation in a 2:4 job, are refused with messages that name the rule,
// the tensor and the row, and change nothing. Inverted masks (per row exactly the weights the
// honest Wanda rule keeps) pass the checks; with `outlier_policy: exclude` the site is dropped
// and the pruned model equals the two honest sites' run bit for bit, with `report` it is
// counted and named in the report and the log.
#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/mask_codec.h"
#include "engine/calibration_data.h"
#include "engine/federation.h"
#include "engine/site_session.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/tokenizer.h"
#include "proto/fedprllm.grpc.pb.h"
#include "proto/payload_convert.h"
#include "tests/e2e_harness.h"
#include "tests/federation_files.h"

namespace fedprllm {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using e2e::ChildProcess;
using e2e::FederationFiles;
using e2e::FreePort;
using e2e::ReadAll;
using e2e::RunSettings;
using e2e::StartClient;
using e2e::StartServer;

const std::string kQ0 = "model.layers.0.self_attn.q_proj.weight";  // [64, 64]

// The hand-written site: joins as site-d, waits for the round, sends raw upload streams.
class HandWrittenSite {
 public:
  HandWrittenSite(int port, const std::string& certs) {
    grpc::SslCredentialsOptions tls;
    tls.pem_root_certs = ReadAll(certs + "/ca.crt");
    tls.pem_private_key = ReadAll(certs + "/site-d.key");
    tls.pem_cert_chain = ReadAll(certs + "/site-d.crt");
    stub_ = v1::FedPrLLM::NewStub(grpc::CreateChannel(absl::StrCat("localhost:", port), grpc::SslCredentials(tls)));
  }
  grpc::Status Join(const std::string& fingerprint) {
    grpc::ClientContext context;
    context.set_deadline(Deadline(30));
    v1::JoinRequest request;
    request.set_client_name("hand-written");
    request.set_model_fingerprint(fingerprint);
    request.set_protocol_version(1);
    return stub_->Join(&context, request, &joined_);
  }
  const v1::JobSpec& job() const { return joined_.job(); }
  // Long-polls until WaitForRound answers something other than NOT_READY (at most `tries`).
  v1::RoundAssignment Wait(int last_completed_round, int tries = 10) {
    v1::RoundAssignment a;
    for (int i = 0; i < tries; ++i) {
      grpc::ClientContext context;
      context.set_deadline(Deadline(30));
      v1::WaitRequest request;
      request.set_session_token(joined_.session_token());
      request.set_last_completed_round(last_completed_round);
      a.Clear();
      if (!stub_->WaitForRound(&context, request, &a).ok()) continue;
      if (a.state() != v1::ROUND_STATE_NOT_READY) break;
    }
    return a;
  }
  // One upload stream of round 0 carrying one payload with `masks` (any header pattern:
  // encoded unstructured, so the sender does not check what the server must).
  grpc::Status Upload(const std::vector<std::pair<std::string, PackedMask>>& masks, MaskPattern header_pattern,
                      v1::UploadAck* ack) {
    absl::StatusOr<EncodedPayload> p = EncodeMasks(masks, MaskPattern{}, joined_.job().max_chunk_bytes());
    if (!p.ok()) return grpc::Status(grpc::StatusCode::INTERNAL, std::string(p.status().message()));
    p->header.pattern = header_pattern;
    std::vector<v1::UploadChunk> messages(1);
    messages[0].set_session_token(joined_.session_token());
    messages[0].set_round(0);
    if (!HeaderToProto(p->header, JobTensorTable(joined_.job()), messages[0].mutable_header()).ok()) {
      return grpc::Status(grpc::StatusCode::INTERNAL, "header");
    }
    for (const PayloadChunk& c : p->chunks) ChunkToProto(c, messages.emplace_back().mutable_chunk());
    grpc::ClientContext context;
    context.set_deadline(Deadline(120));
    auto writer = stub_->UploadPayloads(&context, ack);
    for (const v1::UploadChunk& m : messages) {
      if (!writer->Write(m)) break;  // the server finished the call; Finish says why
    }
    writer->WritesDone();
    return writer->Finish();
  }

 private:
  // Every call has a deadline, so a server that stops answering fails the test, not hangs it.
  static std::chrono::system_clock::time_point Deadline(int seconds) {
    return std::chrono::system_clock::now() + std::chrono::seconds(seconds);
  }
  std::unique_ptr<v1::FedPrLLM::Stub> stub_;
  v1::JoinResponse joined_;
};

class RobustnessE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    files_ = FederationFiles::Make().release();
    ASSERT_TRUE(files_->ok()) << files_->error();
    auto model = LlamaModel::Load(e2e::kModel);
    ASSERT_TRUE(model.ok()) << model.status();
    base_ = new LlamaModel(*std::move(model));
    // What an honest site calibrating on site-c's shard would send, then inverted per row.
    auto tokenizer = Tokenizer::Load(e2e::kTokenizer);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    auto source = ParseCalibrationSource(files_->Shard("site-c"));
    ASSERT_TRUE(source.ok());
    auto tokens = TokenizeCalibrationSources(*tokenizer, {*source}, {base_->config().vocab_size, nullptr});
    ASSERT_TRUE(tokens.ok()) << tokens.status();
    SamplingOptions sampling;
    sampling.nsamples = e2e::kNsamples;
    sampling.seqlen = e2e::kSeqlen;
    auto samples = SampleWindows(*tokens, sampling);
    ASSERT_TRUE(samples.ok()) << samples.status();
    LocalPruneOptions local;  // the clients' defaults: Wanda, row group, 50% unstructured
    auto honest = PruneLocally(*base_, *samples, local);
    ASSERT_TRUE(honest.ok()) << honest.status();
    honest_ = new std::vector<std::pair<std::string, PackedMask>>();
    for (const LayerMasks& layer : honest->masks) honest_->insert(honest_->end(), layer.begin(), layer.end());
  }
  static void TearDownTestSuite() {
    if (!::testing::UnitTest::GetInstance()->Failed() && files_ != nullptr) fs::remove_all(files_->dir());
  }

  // Every mask with each row's bits flipped: pruning exactly what the honest rule keeps. With
  // even row lengths at sparsity 0.5 every row still prunes exactly half.
  static std::vector<std::pair<std::string, PackedMask>> Inverted() {
    std::vector<std::pair<std::string, PackedMask>> out = *honest_;
    for (auto& [name, mask] : out) {
      for (int64_t i = 0; i < mask.numel(); ++i) mask.Set(i, !mask.Get(i));
    }
    return out;
  }

  // site-a and site-b daemons on `run`, each to the end of its one job.
  static void RunHonestSites(const std::string& run, int port) {
    std::vector<std::unique_ptr<ChildProcess>> clients;
    for (const std::string site : {"site-a", "site-b"}) {
      clients.push_back(StartClient(files_->WriteClientConfig(run, site, port, files_->Certs()), run + "/" + site + ".log"));
    }
    for (auto& c : clients) EXPECT_EQ(c->Wait(240), 0) << c->Log();
  }

  // SHA-256 of every safetensors file's tensors in run/out/model, by file name.
  static std::map<std::string, std::string> ModelTensors(const std::string& run) {
    std::map<std::string, std::string> out;
    if (!fs::is_directory(run + "/out/model")) return out;
    for (const auto& entry : fs::directory_iterator(run + "/out/model")) {
      if (entry.path().extension() == ".safetensors") {
        out[entry.path().filename().string()] = e2e::Sha256OfSafetensorsTensors(entry.path().string());
      }
    }
    return out;
  }

  // A one-shot run with site-a, site-b and the hand-written site-d, which first sends the
  // implausible uploads (refused), then the inverted masks (committed). Returns the run dir.
  std::string RunWithInvertedSite(const std::string& name, const std::string& policy) {
    const int port = FreePort();
    const std::string run = files_->WriteServerConfig(
        name, RunSettings{}, port,
        absl::StrCat("allowed_clients: [site-a, site-b, site-d]\noutlier_policy: ", policy, "\n"));
    auto server = StartServer(run, port);
    if (!e2e::WaitUntilListening(*server, port, 5)) {
      ADD_FAILURE() << "the server is not listening\n" << server->Log();
      return run;
    }
    HandWrittenSite site(port, files_->Certs());
    if (const grpc::Status joined = site.Join(base_->Fingerprint()); !joined.ok()) {
      ADD_FAILURE() << "the hand-written site cannot join: " << joined.error_message() << "\n" << server->Log();
      return run;
    }
    std::vector<std::unique_ptr<ChildProcess>> clients;
    for (const std::string honest : {"site-a", "site-b"}) {
      clients.push_back(
          StartClient(files_->WriteClientConfig(run, honest, port, files_->Certs()), run + "/" + honest + ".log"));
    }
    const v1::RoundAssignment round = site.Wait(-1);
    if (round.state() != v1::ROUND_STATE_OPEN) {
      ADD_FAILURE() << "round 0 did not open: " << round.ShortDebugString() << "\n" << server->Log();
      return run;
    }
    v1::UploadAck ack;
    {  // 1. Wrong per-row sparsity, right total: row 3 of q_proj prunes 10, row 4 prunes 54.
      std::vector<std::pair<std::string, PackedMask>> masks = *honest_;
      PackedMask& q = masks[0].second;
      EXPECT_EQ(masks[0].first, kQ0);
      int moved = 0;
      for (int64_t c = 0; c < 64 && moved < 22; ++c) {
        if (q.Get(3 * 64 + c)) {
          q.Set(3 * 64 + c, false);
          ++moved;
        }
      }
      for (int64_t c = 0, added = 0; c < 64 && added < moved; ++c) {
        if (!q.Get(4 * 64 + c)) {
          q.Set(4 * 64 + c, true);
          ++added;
        }
      }
      const grpc::Status s = site.Upload(masks, MaskPattern{}, &ack);
      EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
      EXPECT_EQ(s.error_message(), absl::StrCat("site-d: tensor '", kQ0,
                                                "': row 3 prunes 10 of 64 weights; the job's Wanda row rule "
                                                "(site_group row, sparsity 0.5) needs exactly 32"));
    }
    {  // 1b. A 100% mask: refused at its header, before any of its bits.
      std::vector<std::pair<std::string, PackedMask>> masks = *honest_;
      for (int64_t i = 0; i < masks[1].second.numel(); ++i) masks[1].second.Set(i, true);
      const grpc::Status s = site.Upload(masks, MaskPattern{}, &ack);
      EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
      EXPECT_THAT(s.error_message(), HasSubstr(absl::StrCat("site-d: tensor '", masks[1].first, "': declared_count ")));
      EXPECT_THAT(s.error_message(), HasSubstr("but the job's Wanda row rule (site_group row, sparsity 0.5) needs "
                                               "exactly"));
    }
    {  // 3. Inverted: plausible, committed.
      const grpc::Status s = site.Upload(Inverted(), MaskPattern{}, &ack);
      EXPECT_TRUE(s.ok()) << s.error_message();
      EXPECT_TRUE(ack.committed());
    }
    for (auto& c : clients) EXPECT_EQ(c->Wait(240), 0) << c->Log();
    EXPECT_EQ(site.Wait(0).state(), v1::ROUND_STATE_JOB_DONE);
    EXPECT_EQ(server->Wait(60), 0) << server->Log();
    const std::string log = server->Log();
    EXPECT_THAT(log, HasSubstr(absl::StrCat("upload from site-d for round 0 refused")));
    EXPECT_THAT(log, HasSubstr("row 3 prunes 10 of 64 weights"));
    return run;
  }

  static FederationFiles* files_;
  static LlamaModel* base_;
  static std::vector<std::pair<std::string, PackedMask>>* honest_;
};

// The names of a JSON list, sorted (the report lists sites in commit order).
std::vector<std::string> Sorted(const nlohmann::json& names) {
  std::vector<std::string> out = names.get<std::vector<std::string>>();
  std::sort(out.begin(), out.end());
  return out;
}

FederationFiles* RobustnessE2eTest::files_ = nullptr;
LlamaModel* RobustnessE2eTest::base_ = nullptr;
std::vector<std::pair<std::string, PackedMask>>* RobustnessE2eTest::honest_ = nullptr;

TEST_F(RobustnessE2eTest, NmViolationIsRefusedWithTheRowAndGroup) {
  const int port = FreePort();
  // min_clients 1 and a 1 s join timeout open round 0 with the hand-written site alone.
  const std::string run = files_->WriteServerConfig(
      "nm", RunSettings{"one-shot", "layer", "2:4"}, port,
      "allowed_clients: [site-a, site-b, site-d]\nmin_clients: 1\njoin_timeout_seconds: 1\n");
  auto server = StartServer(run, port);
  ASSERT_TRUE(e2e::WaitUntilListening(*server, port, 5)) << server->Log();
  HandWrittenSite site(port, files_->Certs());
  ASSERT_TRUE(site.Join(base_->Fingerprint()).ok());
  ASSERT_EQ(site.Wait(-1).state(), v1::ROUND_STATE_OPEN);
  // A valid 2:4 mask for every tensor (the first two of each group), then one group of
  // q_proj's row 5 with 3 pruned and the next with 1: the count per row and per tensor is
  // still right.
  std::vector<std::pair<std::string, PackedMask>> masks;
  for (const v1::TensorSpec& t : site.job().tensors()) {
    PackedMask m(std::vector<int64_t>(t.shape().begin(), t.shape().end()));
    for (int64_t i = 0; i < m.numel(); ++i) m.Set(i, i % 4 < 2);
    masks.emplace_back(t.name(), std::move(m));
  }
  ASSERT_EQ(masks[0].first, kQ0);
  masks[0].second.Set(5 * 64 + 12 + 2, true);   // group 3: 3 pruned
  masks[0].second.Set(5 * 64 + 16 + 0, false);  // group 4: 1 pruned
  v1::UploadAck ack;
  const grpc::Status s = site.Upload(masks, MaskPattern{2, 4}, &ack);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_EQ(s.error_message(), absl::StrCat("site-d: tensor '", kQ0,
                                            "': pattern 2:4 violated in row 5, group 3 (flattened elements [332, "
                                            "336)): 3 pruned, expected exactly 2"));
  // The same masks without the violation commit: nothing of the refused stream stayed.
  masks[0].second.Set(5 * 64 + 12 + 2, false);
  masks[0].second.Set(5 * 64 + 16 + 0, true);
  const grpc::Status fixed = site.Upload(masks, MaskPattern{2, 4}, &ack);
  EXPECT_TRUE(fixed.ok()) << fixed.error_message();
  EXPECT_EQ(ack.clients_committed(), 1);
  server->Signal(SIGTERM);
  EXPECT_EQ(server->Wait(60), 0) << server->Log();
  EXPECT_THAT(server->Log(), HasSubstr("pattern 2:4 violated in row 5, group 3"));
}

TEST_F(RobustnessE2eTest, ExcludeDropsTheInvertedSiteAndReportNamesIt) {
  // The reference: the two honest sites alone.
  const int port = FreePort();
  const std::string honest_run =
      files_->WriteServerConfig("honest-2", RunSettings{}, port, "allowed_clients: [site-a, site-b]\n");
  {
    auto server = StartServer(honest_run, port);
    ASSERT_TRUE(e2e::WaitUntilListening(*server, port, 5)) << server->Log();
    RunHonestSites(honest_run, port);
    ASSERT_EQ(server->Wait(60), 0) << server->Log();
  }
  const std::map<std::string, std::string> honest = ModelTensors(honest_run);
  ASSERT_FALSE(honest.empty());

  {  // exclude: site-d is an outlier, dropped; the model is the honest one bit for bit.
    const std::string run = RunWithInvertedSite("exclude", "exclude");
    EXPECT_EQ(ModelTensors(run), honest);
    const nlohmann::json report = nlohmann::json::parse(ReadAll(run + "/out/report.json"));
    const nlohmann::json& round = report["aggregation_rounds"][0];
    EXPECT_EQ(round["excluded_clients"], nlohmann::json::array({"site-d"}));
    EXPECT_EQ(Sorted(round["counted_clients"]), (std::vector<std::string>{"site-a", "site-b"}));
    EXPECT_TRUE(round["sites"]["site-d"]["outlier"].get<bool>());
    EXPECT_TRUE(round["sites"]["site-d"]["excluded"].get<bool>());
    EXPECT_LT(round["sites"]["site-d"]["agreement"].get<double>(), 0.3);
    EXPECT_GT(round["sites"]["site-a"]["agreement"].get<double>(), 0.8);
    EXPECT_FALSE(round["sites"]["site-a"]["outlier"].get<bool>());
    EXPECT_EQ(report["robustness"]["outlier_policy"], "exclude");
    EXPECT_THAT(ReadAll(run + "/server.log"),
                HasSubstr("site site-d is an outlier: its agreement with the decision of all sites, "));
    EXPECT_THAT(ReadAll(run + "/server.log"), HasSubstr("its votes were NOT counted (outlier_policy exclude)"));
  }
  {  // report: site-d is counted, and named in the report and the log.
    const std::string run = RunWithInvertedSite("report", "report");
    EXPECT_NE(ModelTensors(run), honest);
    const nlohmann::json report = nlohmann::json::parse(ReadAll(run + "/out/report.json"));
    const nlohmann::json& round = report["aggregation_rounds"][0];
    EXPECT_EQ(Sorted(round["counted_clients"]), (std::vector<std::string>{"site-a", "site-b", "site-d"}));
    EXPECT_EQ(round["excluded_clients"], nlohmann::json::array());
    EXPECT_TRUE(round["sites"]["site-d"]["outlier"].get<bool>());
    EXPECT_FALSE(round["sites"]["site-d"]["excluded"].get<bool>());
    EXPECT_GT(round["sites"]["site-d"]["distance"].get<double>(), round["sites"]["site-a"]["distance"].get<double>());
    const std::string log = ReadAll(run + "/server.log");
    EXPECT_THAT(log, HasSubstr("site site-d is an outlier: its agreement with the decision of all sites, "));
    EXPECT_THAT(log, HasSubstr("its votes were counted (outlier_policy report)"));
    EXPECT_THAT(log, HasSubstr("round 0: agreement of each site's pruned weights with the decision: "));
    EXPECT_THAT(log, HasSubstr(absl::StrCat("site-d ", absl::StrFormat("%.4f", round["sites"]["site-d"]["agreement"].get<double>()),
                                            " (distance ")));
  }
}

}  // namespace
}  // namespace fedprllm
