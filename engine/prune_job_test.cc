// Round trip of a Hugging Face directory through fedprllm-prune's job: the output keeps the
// input's shard layout, every side file byte for byte, config.json as JSON, and records the
// settings and each mask's digest in the shards' __metadata__ and pruning_report.json.
#include "engine/prune_job.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "model/test_paths.h"

namespace fedprllm {
namespace {

namespace fs = std::filesystem;

std::string Read(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void Write(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

nlohmann::json SafetensorsHeader(const fs::path& path) {
  const std::string bytes = Read(path);
  uint64_t length = 0;
  std::memcpy(&length, bytes.data(), 8);
  return nlohmann::json::parse(bytes.substr(8, length));
}

// A directory of this test process's own: ctest runs this binary's tests in parallel
// processes, so a fixed name would be shared.
fs::path ScratchDir(const std::string& what) {
  return fs::path(::testing::TempDir()) /
         (what + "-" + ::testing::UnitTest::GetInstance()->current_test_info()->name() + "-" +
          std::to_string(::getpid()));
}

// The bundled model as a sharded Hugging Face directory with every kind of side file.
std::string WriteInputDirectory() {
  const fs::path dir = ScratchDir("prune-roundtrip-in");
  fs::remove_all(dir);
  auto model = LlamaModel::Load(testing::BundledModel());
  EXPECT_TRUE(model.ok()) << model.status();
  EXPECT_TRUE(model->SaveHf(dir.string(), testing::BundledTokenizer()).ok());
  // Two shards: layer 0 and the embeddings in one, the rest in the other.
  auto tensors = ReadSafetensors((dir / "model.safetensors").string());
  EXPECT_TRUE(tensors.ok());
  TensorMap first, second;
  nlohmann::json weight_map;
  for (const auto& [name, t] : *tensors) {
    const bool in_first = name.find("layers.0.") != std::string::npos || name.find("embed") != std::string::npos;
    (in_first ? first : second)[name] = t.clone();
    weight_map[name] = in_first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  tensors->clear();
  fs::remove(dir / "model.safetensors");
  EXPECT_TRUE(WriteSafetensors((dir / "model-00001-of-00002.safetensors").string(), first).ok());
  EXPECT_TRUE(WriteSafetensors((dir / "model-00002-of-00002.safetensors").string(), second).ok());
  const nlohmann::json index = {{"metadata", {{"total_size", 0}, {"note", "kept"}}}, {"weight_map", weight_map}};
  Write(dir / "model.safetensors.index.json", index.dump(2));
  nlohmann::json config = nlohmann::json::parse(Read(dir / "config.json"));
  config["_name_or_path"] = "karpathy/stories260K";
  config["transformers_version"] = "4.44.0";
  config["pretraining_tp"] = 1;
  config["initializer_range"] = 0.02;
  config["use_cache"] = true;
  Write(dir / "config.json", config.dump(4) + "\n");  // an indentation SaveHf would not write
  Write(dir / "generation_config.json", R"({"bos_token_id": 1, "eos_token_id": 2, "temperature": 0.6, "top_p": 0.9})");
  Write(dir / "tokenizer_config.json",
        R"({"add_bos_token": true, "chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}"})");
  Write(dir / "special_tokens_map.json", R"({"bos_token": "<s>", "eos_token": "</s>"})");
  Write(dir / "README.md", "# stories260K\n\nA tiny model.\r\n");
  Write(dir / "LICENSE", "MIT\n");
  Write(dir / "pytorch_model.bin", "dense weights in another format");
  fs::create_directories(dir / "original");
  Write(dir / "original" / "consolidated.00.pth", "dense weights");
  return dir.string();
}

TEST(PruneJobTest, OutputKeepsTheInputsFilesShardsAndConfig) {
  const std::string in = WriteInputDirectory();
  const fs::path out = ScratchDir("prune-roundtrip-out");
  fs::remove_all(out);
  PruneJobOptions options;
  options.model_path = in;
  auto source = ParseCalibrationSource(testing::SharedData("tinystories/tinystories_val.txt"));
  ASSERT_TRUE(source.ok()) << source.status();
  options.calibration = {*source};
  options.sampling.nsamples = 4;
  options.sampling.seqlen = 64;
  options.out_dir = out.string();
  auto report = RunPruneJob(options, [](const std::string&) {});
  ASSERT_TRUE(report.ok()) << report.status();

  // Side files byte for byte; weights in other formats and subdirectories left out.
  for (const char* name : {"config.json", "generation_config.json", "tokenizer_config.json", "special_tokens_map.json",
                           "README.md", "LICENSE", "tokenizer.model"}) {
    ASSERT_TRUE(fs::exists(out / name)) << name;
    EXPECT_EQ(Read(out / name), Read(fs::path(in) / name)) << name;
  }
  EXPECT_FALSE(fs::exists(out / "pytorch_model.bin"));
  EXPECT_FALSE(fs::exists(out / "original"));
  EXPECT_EQ(nlohmann::json::parse(Read(out / "config.json")), nlohmann::json::parse(Read(fs::path(in) / "config.json")));

  // The same shards with the same tensors, and a valid index.
  const nlohmann::json in_index = nlohmann::json::parse(Read(fs::path(in) / "model.safetensors.index.json"));
  const nlohmann::json out_index = nlohmann::json::parse(Read(out / "model.safetensors.index.json"));
  EXPECT_EQ(out_index["weight_map"], in_index["weight_map"]);
  EXPECT_EQ(out_index["metadata"]["note"], "kept");
  uint64_t total = 0;
  int64_t digests = 0;
  for (const char* shard : {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}) {
    const nlohmann::json in_header = SafetensorsHeader(fs::path(in) / shard);
    const nlohmann::json out_header = SafetensorsHeader(out / shard);
    for (const auto& [name, entry] : in_header.items()) {
      if (name == "__metadata__") continue;
      ASSERT_TRUE(out_header.contains(name)) << shard << " lacks " << name;
      EXPECT_EQ(out_header[name]["dtype"], entry["dtype"]);
      EXPECT_EQ(out_header[name]["shape"], entry["shape"]);
      total += out_header[name]["data_offsets"][1].get<uint64_t>() - out_header[name]["data_offsets"][0].get<uint64_t>();
    }
    EXPECT_EQ(out_header.size(), in_header.size());
    const nlohmann::json& metadata = out_header["__metadata__"];
    EXPECT_EQ(metadata["fedprllm.tool"], "fedprllm-prune");
    EXPECT_EQ(metadata["fedprllm.sparsity"], "0.5");
    for (const auto& [key, value] : metadata.items()) digests += key.rfind("fedprllm.mask_sha256.", 0) == 0;
  }
  EXPECT_EQ(out_index["metadata"]["total_size"].get<uint64_t>(), total);

  // Every pruned matrix has a digest, and it is the digest of the zeros actually written.
  auto pruned = LlamaModel::Load(out.string());
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  const nlohmann::json written = nlohmann::json::parse(Read(out / "pruning_report.json"));
  const int64_t matrices = pruned->config().num_hidden_layers * kNumLinears;
  EXPECT_EQ(digests, matrices);
  ASSERT_EQ(written["mask_sha256"].size(), static_cast<size_t>(matrices));
  for (const auto& [name, digest] : written["mask_sha256"].items()) {
    const at::Tensor zeros = (pruned->tensors().at(name) == 0).to(at::kByte).contiguous();
    const PackedMask mask = PackedMask::FromBools(zeros.sizes().vec(), {zeros.data_ptr<uint8_t>(),
                                                                         static_cast<size_t>(zeros.numel())});
    EXPECT_EQ(MaskSha256(mask), digest.get<std::string>()) << name;
    EXPECT_NEAR(static_cast<double>(mask.CountOnes()) / mask.numel(), 0.5, 0.01) << name;
  }
  EXPECT_NE(written["biases"].get<std::string>().find("never pruned"), std::string::npos);
  std::vector<std::string> left_out;
  for (const auto& entry : written["files_not_copied"]) left_out.push_back(entry["name"]);
  EXPECT_EQ(left_out, (std::vector<std::string>{"original", "pytorch_model.bin"}));
}

TEST(PruneJobTest, ACastCheckpointKeepsItsLayoutAndRewritesOnlyTorchDtype) {
  const std::string in = WriteInputDirectory();
  const fs::path out = fs::path(::testing::TempDir()) / "cast-roundtrip-out";
  fs::remove_all(out);
  auto model = LlamaModel::Load(in);
  ASSERT_TRUE(model.ok()) << model.status();
  auto cast = model->CastTo(at::kBFloat16);
  ASSERT_TRUE(cast.ok());
  ASSERT_TRUE(cast->SaveHf(out.string()).ok());
  nlohmann::json expected = nlohmann::json::parse(Read(fs::path(in) / "config.json"));
  expected["torch_dtype"] = "bfloat16";
  EXPECT_EQ(nlohmann::json::parse(Read(out / "config.json")), expected);
  EXPECT_EQ(Read(out / "tokenizer_config.json"), Read(fs::path(in) / "tokenizer_config.json"));
  EXPECT_TRUE(fs::exists(out / "model-00002-of-00002.safetensors"));
  EXPECT_FALSE(fs::exists(out / "pruning_report.json"));  // nothing was pruned
  auto reloaded = LlamaModel::Load(out.string());
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  EXPECT_EQ(reloaded->config().dtype, at::kBFloat16);
  EXPECT_EQ(reloaded->Fingerprint(), cast->Fingerprint());
}

}  // namespace
}  // namespace fedprllm
