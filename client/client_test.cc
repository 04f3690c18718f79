// Unit tests of the client's pieces that need no network: config validation and the
// decoding of a FetchDecisions stream.
#include "client/client_config.h"
#include "client/federation_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/payload_convert.h"

namespace fedprllm {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

const char kMinimal[] = R"(
server_address: "localhost:50051"
tls: {cert: a.crt, key: a.key, ca: ca.crt}
model: m.bin
calibration: [a.txt]
)";

TEST(ClientConfigTest, DefaultsAndBadKeys) {
  auto c = ParseClientConfig(kMinimal, "c.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->nsamples, 128);
  EXPECT_EQ(c->seqlen, 256);
  EXPECT_EQ(c->device, "auto");
  EXPECT_EQ(c->local_group, "row");
  for (const auto& [line, key] : std::vector<std::pair<std::string, std::string>>{
           {"nsamples: 0", "'nsamples'"},
           {"seqlen: 1", "'seqlen'"},
           {"metric: sparsegpt", "'metric'"},
           {"dtype: int8", "'dtype'"},
           {"local_group: column", "'local_group'"},
           {"retry_max_seconds: 0", "'retry_max_seconds'"},
           {"server_address: nowhere", "'server_address'"},
           {"calibration: []", "'calibration'"},
           {"batch: 3", "unknown config key 'batch'"}}) {
    auto bad = ParseClientConfig(std::string(kMinimal) + line + "\n", "c.yaml");
    EXPECT_THAT(bad.status().message(), HasSubstr(key)) << line;
  }
  EXPECT_THAT(ParseClientConfig("server_address: \"h:1\"\ninsecure: true\nmodel: m\ncalibration: [a]\n", "c")
                  .status()
                  .message(),
              HasSubstr("'name'"));
}

TEST(ClientConfigTest, CalibrationSourcesUseOneSyntax) {
  const std::string base = "server_address: \"localhost:50051\"\ntls: {cert: a.crt, key: a.key, ca: ca.crt}\nmodel: m\n";
  auto flow = ParseClientConfig(
      base + "calibration: [a.txt, c4.jsonl:prefix+gold_completion, ids.jsonl:input_ids, x.npy, train.bin:uint16]\n",
      "c.yaml");
  ASSERT_TRUE(flow.ok()) << flow.status();
  EXPECT_EQ(flow->calibration, (std::vector<std::string>{"a.txt", "c4.jsonl:prefix+gold_completion",
                                                         "ids.jsonl:input_ids", "x.npy", "train.bin:uint16"}));
  auto block = ParseClientConfig(base + "calibration:\n  - c4.jsonl:prefix+gold_completion\n", "c.yaml");
  ASSERT_TRUE(block.ok()) << block.status();
  EXPECT_EQ(block->calibration, std::vector<std::string>{"c4.jsonl:prefix+gold_completion"});
  auto old = ParseClientConfig(base + "calibration:\n  - c4.jsonl:prefix,gold_completion\n", "c.yaml");
  ASSERT_FALSE(old.ok());
  EXPECT_THAT(old.status().message(),
              AllOf(HasSubstr("'calibration'"), HasSubstr("write \"c4.jsonl:prefix+gold_completion\"")));
  EXPECT_THAT(ParseClientConfig(base + "calibration: [train.bin]\n", "c.yaml").status().message(),
              AllOf(HasSubstr("'calibration'"), HasSubstr("train.bin:uint16")));
}

TEST(ClientTest, TransientCodes) {
  EXPECT_TRUE(IsTransient(absl::UnavailableError("")));
  EXPECT_TRUE(IsTransient(absl::DataLossError("")));
  EXPECT_TRUE(IsTransient(absl::CancelledError("")));
  EXPECT_FALSE(IsTransient(absl::PermissionDeniedError("")));
  EXPECT_FALSE(IsTransient(absl::InvalidArgumentError("")));
}

v1::JobSpec OneTensorJob(bool scaling) {
  v1::JobSpec job;
  v1::TensorSpec* t = job.add_tensors();
  t->set_name("model.layers.0.mlp.up_proj.weight");
  t->add_shape(4);
  t->add_shape(8);
  t->set_layer(0);
  job.set_weight_scaling(scaling);
  job.set_max_chunk_bytes(1 << 20);
  return job;
}

void Append(const EncodedPayload& p, int round, std::vector<v1::DecisionChunk>* out) {
  v1::DecisionChunk h;
  h.set_round(round);
  EXPECT_TRUE(HeaderToProto(p.header, JobTensorTable(OneTensorJob(true)), h.mutable_header()).ok());
  out->push_back(h);
  for (const PayloadChunk& c : p.chunks) {
    v1::DecisionChunk m;
    m.set_round(round);
    ChunkToProto(c, m.mutable_chunk());
    out->push_back(m);
  }
}

TEST(ClientTest, DecodesMaskAndScaleExactly) {
  const std::string name = "model.layers.0.mlp.up_proj.weight";
  PackedMask mask({4, 8});
  for (int i = 0; i < 32; i += 3) mask.Set(i, true);
  std::vector<float> scale(32);
  for (int i = 0; i < 32; ++i) scale[i] = (i % 3) / 3.0f;
  std::vector<v1::DecisionChunk> stream;
  Append(*EncodeMask(name, mask, {}, 3), 0, &stream);
  Append(*EncodeFloat32(name, {4, 8}, scale, PayloadKind::kWeightScale, 7), 0, &stream);
  auto d = DecodeDecisionStream(stream, 0, OneTensorJob(true), {0});
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->size(), 1u);
  EXPECT_EQ((*d)[0].mask, mask);
  ASSERT_TRUE((*d)[0].scale.defined());
  EXPECT_EQ((*d)[0].scale.sizes().vec(), (std::vector<int64_t>{4, 8}));
  for (int i = 0; i < 32; ++i) EXPECT_EQ((*d)[0].scale.view(-1)[i].item<float>(), scale[i]);

  // Missing scale, wrong round, corrupted chunk: refused.
  std::vector<v1::DecisionChunk> no_scale(stream.begin(), stream.begin() + 1 + (4 + 2) / 3);
  EXPECT_THAT(DecodeDecisionStream(no_scale, 0, OneTensorJob(true), {0}).status().message(),
              HasSubstr("no WEIGHT_SCALE"));
  EXPECT_THAT(DecodeDecisionStream(stream, 1, OneTensorJob(true), {0}).status().message(), HasSubstr("round 0"));
  std::vector<v1::DecisionChunk> bad = stream;
  bad[1].mutable_chunk()->mutable_data()->at(0) ^= 1;
  EXPECT_EQ(DecodeDecisionStream(bad, 0, OneTensorJob(true), {0}).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(DecodeDecisionStream({}, 0, OneTensorJob(false), {0}).status().message(), HasSubstr("no mask for"));
}

TEST(ClientConfigTest, TheExampleFileParses) {
  absl::StatusOr<ClientConfig> config = LoadClientConfig(std::string(FEDPRLLM_SOURCE_DIR) + "/deploy/client.example.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->exit_after_jobs, 0);
  EXPECT_TRUE(config->models.empty());
  // A models map is a mapping under one key, not flattened like tls.
  absl::StatusOr<ClientConfig> mapped =
      ParseClientConfig("server_address: \"h:1\"\ninsecure: true\nname: a\ncalibration: [x.txt]\n"
                        "models: {llama-2-7b: /m/7b, stories260K: /m/s.bin}\n",
                        "mapped.yaml");
  ASSERT_TRUE(mapped.ok()) << mapped.status();
  EXPECT_EQ(mapped->models.size(), 2u);
  EXPECT_EQ(mapped->models.at("llama-2-7b"), "/m/7b");
  EXPECT_FALSE(config->activations_on_host);
  absl::StatusOr<ClientConfig> on_host = ParseClientConfig(
      "server_address: \"h:1\"\ninsecure: true\nname: a\nmodel: m\ncalibration: [x.txt]\nactivations_on_host: true\n",
      "host.yaml");
  ASSERT_TRUE(on_host.ok()) << on_host.status();
  EXPECT_TRUE(on_host->activations_on_host);
  EXPECT_THAT(ParseClientConfig("server_address: \"h:1\"\ninsecure: true\nname: a\ncalibration: [x.txt]\n",
                                "nomodel.yaml")
                  .status()
                  .message(),
              HasSubstr("'model': is required when 'models' lists no model"));
}

}  // namespace
}  // namespace fedprllm
