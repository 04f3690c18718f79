// The loader's defences: model files mangled by the test itself (truncated, corrupted
// header, wrong shape, wrong dtype) are each rejected with an error naming file and tensor.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "model/llama_model.h"
#include "model/test_paths.h"
#include "model/tokenizer.h"

namespace fedprllm {
namespace {

namespace fs = std::filesystem;

class ModelFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("fedprllm_files_test_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    std::ifstream in(testing::BundledModel(), std::ios::binary);
    bin_.assign(std::istreambuf_iterator<char>(in), {});
    ASSERT_EQ(bin_.size(), 1056540u);
    auto model = LlamaModel::Load(testing::BundledModel());
    ASSERT_TRUE(model.ok());
    hf_dir_ = (dir_ / "hf").string();
    ASSERT_TRUE(model->SaveHf(hf_dir_).ok());
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Write(const std::string& name, const std::string& bytes) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }
  std::string SafetensorsBytes() {
    std::ifstream in(hf_dir_ + "/model.safetensors", std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  // Writes an HF directory whose model.safetensors is `bytes`.
  std::string HfWith(const std::string& name, const std::string& bytes) {
    const fs::path d = dir_ / name;
    fs::create_directories(d);
    fs::copy_file(hf_dir_ + "/config.json", d / "config.json");
    std::ofstream((d / "model.safetensors").string(), std::ios::binary) << bytes;
    return d.string();
  }
  // Rewrites the JSON header of the converted model with `edit`.
  std::string EditedHeader(const std::function<void(nlohmann::json&)>& edit) {
    std::string bytes = SafetensorsBytes();
    uint64_t len;
    std::memcpy(&len, bytes.data(), 8);
    nlohmann::json header = nlohmann::json::parse(bytes.substr(8, len));
    edit(header);
    std::string text = header.dump();
    text.append(len > text.size() ? len - text.size() : 0, ' ');
    EXPECT_EQ(text.size(), len) << "edit must not grow the header";
    return bytes.substr(0, 8) + text + bytes.substr(8 + len);
  }

  static void ExpectErrorMentions(const absl::Status& status, const std::vector<std::string>& parts) {
    ASSERT_FALSE(status.ok());
    for (const auto& part : parts) {
      EXPECT_NE(status.message().find(part), absl::string_view::npos) << status.message() << " lacks " << part;
    }
  }

  fs::path dir_;
  std::string bin_;
  std::string hf_dir_;
};

TEST_F(ModelFilesTest, TruncatedLlama2cNamesTheTensor) {
  const std::string path = Write("truncated.bin", bin_.substr(0, 300000));
  ExpectErrorMentions(LlamaModel::Load(path).status(), {path, "tensor wo", "truncated"});
  ExpectErrorMentions(LlamaModel::Load(Write("tiny.bin", bin_.substr(0, 10))).status(), {"28-byte"});
}

TEST_F(ModelFilesTest, CorruptLlama2cHeaderIsRejected) {
  std::string bytes = bin_;
  const int32_t heads = 7;  // 64 is not divisible by 7
  std::memcpy(&bytes[12], &heads, 4);
  ExpectErrorMentions(LlamaModel::Load(Write("heads.bin", bytes)).status(), {"header", "num_attention_heads"});
  bytes = bin_;
  const int32_t layers = 4;  // the file then has a layer's worth of trailing bytes
  std::memcpy(&bytes[8], &layers, 4);
  ExpectErrorMentions(LlamaModel::Load(Write("layers.bin", bytes)).status(), {"trailing bytes"});
  bytes = bin_;
  const int32_t dim = -64;
  std::memcpy(&bytes[0], &dim, 4);
  ExpectErrorMentions(LlamaModel::Load(Write("dim.bin", bytes)).status(), {"hidden_size"});
}

TEST_F(ModelFilesTest, TruncatedSafetensorsNamesTheTensor) {
  const std::string bytes = SafetensorsBytes();
  const std::string dir = HfWith("truncated", bytes.substr(0, bytes.size() - 1000));
  ExpectErrorMentions(LlamaModel::Load(dir).status(), {"model.safetensors", "tensor", "beyond the end"});
  ExpectErrorMentions(LlamaModel::Load(HfWith("short", bytes.substr(0, 5))).status(), {"8-byte"});
}

TEST_F(ModelFilesTest, CorruptSafetensorsHeaderIsRejected) {
  std::string bytes = SafetensorsBytes();
  bytes[20] = '\x01';
  ExpectErrorMentions(LlamaModel::Load(HfWith("json", bytes)).status(), {"not a valid JSON"});
  bytes = SafetensorsBytes();
  const uint64_t huge = uint64_t{1} << 40;
  std::memcpy(&bytes[0], &huge, 8);
  ExpectErrorMentions(LlamaModel::Load(HfWith("len", bytes)).status(), {"header length"});
  const std::string overlap = EditedHeader([](nlohmann::json& h) {
    h["model.norm.weight"]["data_offsets"] = h["model.embed_tokens.weight"]["data_offsets"][0].get<uint64_t>() == 0
        ? nlohmann::json{0, 256} : nlohmann::json{0, 256};
  });
  ExpectErrorMentions(LlamaModel::Load(HfWith("overlap", overlap)).status(), {"overlaps"});
}

TEST_F(ModelFilesTest, WrongShapeIsRejected) {
  const std::string bytes = EditedHeader([](nlohmann::json& h) {
    h["model.layers.2.mlp.up_proj.weight"]["shape"] = {64, 172};  // transposed
  });
  ExpectErrorMentions(LlamaModel::Load(HfWith("shape", bytes)).status(),
                      {"model.layers.2.mlp.up_proj.weight", "[64, 172]", "[172, 64]"});
  const std::string range = EditedHeader([](nlohmann::json& h) {
    h["model.layers.0.self_attn.q_proj.weight"]["shape"] = {64, 65};
  });
  ExpectErrorMentions(LlamaModel::Load(HfWith("range", range)).status(),
                      {"model.layers.0.self_attn.q_proj.weight", "does not hold"});
}

TEST_F(ModelFilesTest, WrongDtypeIsRejected) {
  const std::string int_dtype = EditedHeader([](nlohmann::json& h) {
    h["model.layers.1.self_attn.k_proj.weight"]["dtype"] = "I32";
  });
  ExpectErrorMentions(LlamaModel::Load(HfWith("i32", int_dtype)).status(),
                      {"model.layers.1.self_attn.k_proj.weight", "unsupported dtype"});
  const std::string half = EditedHeader([](nlohmann::json& h) {
    h["model.norm.weight"]["dtype"] = "F16";  // byte range then holds twice the elements
  });
  ExpectErrorMentions(LlamaModel::Load(HfWith("f16", half)).status(), {"model.norm.weight", "F16"});
}

TEST_F(ModelFilesTest, MissingTensorAndBadConfigAreRejected) {
  const std::string missing = EditedHeader([](nlohmann::json& h) { h.erase("model.layers.4.mlp.down_proj.weight"); });
  ExpectErrorMentions(LlamaModel::Load(HfWith("missing", missing)).status(),
                      {"model.layers.4.mlp.down_proj.weight", "missing"});
  const fs::path d = dir_ / "config";
  fs::create_directories(d);
  std::ofstream((d / "config.json").string()) << R"({"architectures": ["GPT2LMHeadModel"], "hidden_size": 64})";
  ExpectErrorMentions(LlamaModel::Load(d.string()).status(), {"config.json", "GPT2LMHeadModel"});
  ExpectErrorMentions(LlamaModel::Load((dir_ / "nothing").string()).status(), {"not found"});
}

TEST_F(ModelFilesTest, TokenizerIsFoundOrExplained) {
  auto found = FindTokenizer(testing::BundledModel(), "");
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(fs::path(*found).filename(), "tok512.model");
  ExpectErrorMentions(FindTokenizer(hf_dir_, "").status(), {"tokenizer.json", "tokenizer.model", "--tokenizer"});
  ExpectErrorMentions(Tokenizer::Load(testing::BundledModel()).status(), {"cannot load tokenizer"});
}

}  // namespace
}  // namespace fedprllm
