// fuzz_make_seeds: writes the generated seeds of fuzz/corpus/ (the ones fuzz/corpus/README.md
// marks "generated"): real payloads from EncodeMasks/EncodeFloat32 in mask_codec_fuzz's byte
// layout and as the protobuf streams a client and a server send, safetensors files from
// WriteSafetensors and SafetensorsWriter, the tiny sharded checkpoint's index, minimized
// llama2.c checkpoints, .npy and raw token files, and config.json as ToHfJson writes it.
//
//   fuzz_make_seeds fuzz/corpus [path/to/stories260K.bin]
//
// Every file is named gen-*.bin; rerunning replaces them and leaves the other seeds alone.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/util/delimited_message_util.h>

#include "common/mask_codec.h"
#include "common/packed_mask.h"
#include "common/splitmix64.h"
#include "fuzz/payload_bytes.h"
#include "fuzz/tiny_checkpoint.h"
#include "model/llama_model.h"
#include "model/safetensors.h"
#include "proto/fedprllm.pb.h"
#include "proto/payload_convert.h"

namespace fedprllm::fuzz {
namespace {

namespace fs = std::filesystem;

std::string root;  // the corpus folder given on the command line

// Seeded values from the project's splitmix64 stream.
struct Rng {
  explicit Rng(uint64_t seed) : state(seed) {}
  uint64_t Next() { return SplitMix64(&state); }
  uint64_t state;
};

void Write(const std::string& target, const std::string& name, const std::string& bytes) {
  const fs::path dir = fs::path(root) / target;
  fs::create_directories(dir);
  std::ofstream out(dir / ("gen-" + name + ".bin"), std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) {
    std::fprintf(stderr, "cannot write %s/%s\n", dir.c_str(), name.c_str());
    std::exit(1);
  }
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

template <typename T>
T OrDie(absl::StatusOr<T> v, const char* what) {
  if (!v.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, std::string(v.status().message()).c_str());
    std::exit(1);
  }
  return *std::move(v);
}
void OrDie(const absl::Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, std::string(s.message()).c_str());
    std::exit(1);
  }
}

// A mask of `shape` with each bit set with probability `density`, from `seed`.
PackedMask RandomMask(const std::vector<int64_t>& shape, double density, uint64_t seed) {
  PackedMask m(shape);
  Rng rng(seed);
  for (int64_t i = 0; i < m.numel(); ++i) m.Set(i, (rng.Next() >> 11) * 0x1.0p-53 < density);
  return m;
}

// A 2:4 mask: in every group of 4 along the last dimension, 2 pruned at seeded positions.
PackedMask TwoFourMask(const std::vector<int64_t>& shape, uint64_t seed) {
  PackedMask m(shape);
  Rng rng(seed);
  static const int kPairs[6][2] = {{0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 3}};
  for (int64_t g = 0; g < m.numel() / 4; ++g) {
    const int* pair = kPairs[rng.Next() % 6];
    m.Set(4 * g + pair[0], true);
    m.Set(4 * g + pair[1], true);
  }
  return m;
}

std::vector<std::pair<std::string, PackedMask>> Named(std::vector<PackedMask> masks) {
  std::vector<std::pair<std::string, PackedMask>> named;
  for (size_t i = 0; i < masks.size(); ++i) named.emplace_back(kFuzzTensorNames[i], std::move(masks[i]));
  return named;
}

void MaskCodecSeeds() {
  const auto& s = kFuzzTensorShapes;
  // One tensor, raw bits, exact fields.
  EncodedPayload one = OrDie(EncodeMask(kFuzzTensorNames[0], RandomMask(s[0], 0.5, 1), MaskPattern{}), "encode");
  Write("mask_codec", "raw-one-tensor", WritePayloadBytes(one, 0));
  Write("mask_codec", "raw-one-tensor-fixed", WritePayloadBytes(one, kFixCrc | kFixSizes));
  // All four tensors, sparse enough that zstd pays.
  auto sparse = Named({RandomMask(s[0], 0.02, 2), RandomMask(s[1], 0.0, 3), RandomMask(s[2], 0.01, 4), RandomMask(s[3], 0.0, 5)});
  EncodedPayload zstd = OrDie(EncodeMasks(sparse, MaskPattern{}), "encode zstd");
  if (zstd.header.encoding != PayloadEncoding::kZstdBits) std::fprintf(stderr, "note: sparse payload not zstd\n");
  Write("mask_codec", "zstd-four-tensors", WritePayloadBytes(zstd, 0));
  // The same in 8-byte chunks.
  EncodedPayload chunked = OrDie(EncodeMasks(sparse, MaskPattern{}, 8), "encode chunked");
  Write("mask_codec", "zstd-chunked", WritePayloadBytes(chunked, kSmallChunks));
  auto dense = Named({RandomMask(s[0], 0.5, 6), RandomMask(s[1], 0.5, 7), RandomMask(s[2], 0.5, 8)});
  Write("mask_codec", "raw-chunked", WritePayloadBytes(OrDie(EncodeMasks(dense, MaskPattern{}, 5), "encode"), kSmallChunks));
  // 2:4 (every shape here has a last dimension divisible by 4 except lm_head's).
  auto two_four = Named({TwoFourMask(s[0], 9), TwoFourMask(s[1], 10), TwoFourMask(s[2], 11)});
  Write("mask_codec", "two-four", WritePayloadBytes(OrDie(EncodeMasks(two_four, MaskPattern{2, 4}), "encode 2:4"), kExpectTwoFour));
  // Float32 (WEIGHT_SCALE): varied values (raw) and constant values (zstd).
  std::vector<float> varied(8 * 16), constant(8 * 16, 1.0f);
  for (size_t i = 0; i < varied.size(); ++i) varied[i] = 0.5f + 0.01f * static_cast<float>(i);
  Write("mask_codec", "f32-raw", WritePayloadBytes(OrDie(EncodeFloat32(kFuzzTensorNames[0], s[0], varied), "f32"), kExpectWeightScale));
  Write("mask_codec", "f32-zstd", WritePayloadBytes(OrDie(EncodeFloat32(kFuzzTensorNames[0], s[0], constant), "f32"), kExpectWeightScale));
  Write("mask_codec", "f32-chunked",
        WritePayloadBytes(OrDie(EncodeFloat32(kFuzzTensorNames[0], s[0], varied, PayloadKind::kWeightScale, 64), "f32"),
                          kExpectWeightScale | kSmallChunks));
}

// The job of payload_proto_fuzz (same tensors, same table order).
v1::JobSpec SeedJob() {
  v1::JobSpec job;
  for (size_t i = 0; i < kFuzzTensorNames.size(); ++i) {
    v1::TensorSpec* t = job.add_tensors();
    t->set_name(kFuzzTensorNames[i]);
    for (int64_t d : kFuzzTensorShapes[i]) t->add_shape(d);
  }
  return job;
}

template <typename M>
void Append(const M& message, std::string* out) {
  google::protobuf::io::StringOutputStream stream(out);
  if (!google::protobuf::util::SerializeDelimitedToZeroCopyStream(message, &stream)) std::exit(1);
}

void PayloadProtoSeeds() {
  const JobTensorTable table(SeedJob());
  const auto& s = kFuzzTensorShapes;
  // Upload: one payload of two tensors, a keepalive, one of a third, in 256-byte chunks.
  for (bool two_four : {false, true}) {
    std::string stream(1, static_cast<char>(two_four ? 4 : 0));
    std::vector<EncodedPayload> payloads;
    if (two_four) {
      payloads.push_back(OrDie(EncodeMasks(Named({TwoFourMask(s[0], 20), TwoFourMask(s[1], 21)}), MaskPattern{2, 4}, 256), "up"));
      payloads.push_back(OrDie(EncodeMask(kFuzzTensorNames[2], TwoFourMask(s[2], 22), MaskPattern{2, 4}, 256), "up"));
    } else {
      payloads.push_back(OrDie(EncodeMasks(Named({RandomMask(s[0], 0.5, 20), RandomMask(s[1], 0.03, 21)}), MaskPattern{}, 256), "up"));
      payloads.push_back(OrDie(EncodeMask(kFuzzTensorNames[2], RandomMask(s[2], 0.0, 22), MaskPattern{}, 256), "up"));
    }
    bool first = true;
    for (const EncodedPayload& p : payloads) {
      v1::UploadChunk header;
      if (first) {
        header.set_session_token("0123456789abcdef0123456789abcdef");
        header.set_round(1);
        first = false;
      }
      OrDie(HeaderToProto(p.header, table, header.mutable_header()), "header");
      Append(header, &stream);
      for (const PayloadChunk& c : p.chunks) {
        v1::UploadChunk chunk;
        ChunkToProto(c, chunk.mutable_chunk());
        Append(chunk, &stream);
      }
      v1::UploadChunk keepalive;
      keepalive.set_keepalive(true);
      Append(keepalive, &stream);
    }
    Write("payload_proto", two_four ? "upload-two-four" : "upload", stream);
  }
  // Decisions: each round tensor's mask, each followed by its WEIGHT_SCALE.
  std::string stream(1, static_cast<char>(1 | 2));
  for (size_t i = 0; i < 3; ++i) {
    std::vector<EncodedPayload> payloads;
    payloads.push_back(OrDie(EncodeMask(kFuzzTensorNames[i], RandomMask(s[i], 0.5, 30 + i), MaskPattern{}, 256), "mask"));
    int64_t numel = s[i][0] * s[i][1];
    std::vector<float> scale(numel, 1.0f);
    for (int64_t j = 0; j < numel; j += 3) scale[j] = 1.25f;
    payloads.push_back(OrDie(EncodeFloat32(kFuzzTensorNames[i], s[i], scale, PayloadKind::kWeightScale, 256), "scale"));
    for (const EncodedPayload& p : payloads) {
      v1::DecisionChunk header;
      header.set_round(1);
      OrDie(HeaderToProto(p.header, table, header.mutable_header()), "header");
      Append(header, &stream);
      for (const PayloadChunk& c : p.chunks) {
        v1::DecisionChunk chunk;
        chunk.set_round(1);
        ChunkToProto(c, chunk.mutable_chunk());
        Append(chunk, &stream);
      }
    }
  }
  Write("payload_proto", "decisions-with-scales", stream);
}

void SafetensorsSeeds() {
  const fs::path tmp = fs::temp_directory_path() / ("fuzz_make_seeds_" + std::to_string(::getpid()));
  fs::create_directories(tmp);
  TensorMap tensors;
  tensors["a.weight"] = at::arange(12, at::kFloat).reshape({3, 4});
  tensors["b.weight"] = at::ones({2, 2, 2}, at::kHalf);
  tensors["c.bias"] = at::full({5}, 0.5, at::kBFloat16);
  tensors["scalar"] = at::ones({}, at::kFloat);
  tensors["empty"] = at::zeros({0, 3}, at::kFloat);
  OrDie(WriteSafetensors((tmp / "a.safetensors").string(), tensors), "safetensors");
  Write("safetensors", "mixed-dtypes", std::string(1, '\0') + ReadFile((tmp / "a.safetensors").string()));
  // The streaming writer, with metadata and a padded header.
  auto writer = OrDie(SafetensorsWriter::Create((tmp / "b.safetensors").string(),
                                                {{"x", at::kFloat, {2, 3}}, {"y", at::kBFloat16, {4}}},
                                                {{"note", "fuzz seed"}}, 64),
                      "writer");
  OrDie(writer->Append(std::string(2 * 3 * 4 + 4 * 2, '\x01')), "append");
  OrDie(writer->FinishWithMetadata({{"note", "finished"}, {"step", "1"}}), "finish");
  Write("safetensors", "streamed-metadata", std::string(1, '\0') + ReadFile((tmp / "b.safetensors").string()));
  // The tiny sharded checkpoint: one shard as a file seed, its index as an index seed.
  const fs::path ckpt = tmp / "ckpt";
  OrDie(WriteTinyShardedCheckpoint(ckpt.string()), "checkpoint");
  Write("safetensors", "index", std::string(1, '\1') + ReadFile((ckpt / "model.safetensors.index.json").string()));
  for (const auto& entry : fs::directory_iterator(ckpt)) {
    if (entry.path().filename().string().rfind("model-00001", 0) == 0) {
      Write("safetensors", "shard-1", std::string(1, '\0') + ReadFile(entry.path().string()));
    }
  }
  Write("llama_config", "tiny-synthetic", ReadFile((ckpt / "config.json").string()));
  fs::remove_all(tmp);
}

// A llama2.c v0 checkpoint with the given header and seeded float32 weights.
std::string Llama2cCheckpoint(int32_t dim, int32_t hidden, int32_t layers, int32_t heads, int32_t kv_heads,
                              int32_t vocab, int32_t seq_len) {
  const int32_t header[7] = {dim, hidden, layers, heads, kv_heads, vocab, seq_len};
  std::string out(reinterpret_cast<const char*>(header), sizeof(header));
  const int64_t v = vocab < 0 ? -int64_t{vocab} : vocab, kv_dim = int64_t{dim} * kv_heads / heads;
  const int64_t head_dim = dim / heads;
  int64_t floats = v * dim + layers * (dim + dim * dim + 2 * kv_dim * dim + dim * dim + dim + 3 * hidden * dim) + dim +
                   2 * int64_t{seq_len} * (head_dim / 2) + (vocab < 0 ? v * dim : 0);
  Rng rng(7);
  for (int64_t i = 0; i < floats; ++i) {
    const float f = static_cast<float>((rng.Next() >> 40) * 0x1.0p-24 - 0.5);
    out.append(reinterpret_cast<const char*>(&f), sizeof(f));
  }
  return out;
}

void Llama2cSeeds(const std::string& stories) {
  Write("llama2c", "tiny-shared-classifier", Llama2cCheckpoint(8, 16, 2, 2, 1, 16, 8));
  Write("llama2c", "tiny-own-classifier", Llama2cCheckpoint(8, 12, 1, 2, 2, -10, 4));
  if (!stories.empty()) {
    LlamaModel model = OrDie(LoadLlama2c(stories), "stories260K");
    Write("llama_config", "stories260K-tohfjson", model.config().ToHfJson().dump(2) + "\n");
  }
}

// An .npy file (version 1.0 or 2.0) of `descr` with `shape`, the ids 0, 1, 2, ...
std::string Npy(const std::string& descr, int item_size, const std::vector<int64_t>& shape, int version) {
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (";
  int64_t n = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    dict += std::to_string(shape[i]) + (shape.size() == 1 || i + 1 < shape.size() ? ", " : "");
    n *= shape[i];
  }
  if (!dict.empty() && dict.back() == ' ' && shape.size() > 1) dict.pop_back();
  dict += "), }";
  const size_t prefix = version == 1 ? 10 : 12;
  while ((prefix + dict.size() + 1) % 64 != 0) dict += ' ';
  dict += '\n';
  std::string out = "\x93NUMPY";
  out += static_cast<char>(version);
  out += '\0';
  const uint32_t len = static_cast<uint32_t>(dict.size());
  out.append(reinterpret_cast<const char*>(&len), version == 1 ? 2 : 4);
  out += dict;
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t id = static_cast<uint64_t>(i * 37 % 500);
    out.append(reinterpret_cast<const char*>(&id), item_size);
  }
  return out;
}

void CalibrationSeeds() {
  auto mode = [](int m) { return std::string(1, static_cast<char>(m)); };
  Write("calibration", "npy-int32-1d", mode(4) + Npy("<i4", 4, {64}, 1));
  Write("calibration", "npy-int64-2d", mode(4) + Npy("<i8", 8, {4, 16}, 1));
  Write("calibration", "npy-uint32-v2", mode(4) + Npy("<u4", 4, {32}, 2));
  std::string u16, u32;
  for (uint32_t i = 0; i < 256; ++i) {
    const uint16_t a = static_cast<uint16_t>(i * 7 % 512);
    const uint32_t b = i * 13 % 512;
    u16.append(reinterpret_cast<const char*>(&a), 2);
    u32.append(reinterpret_cast<const char*>(&b), 4);
  }
  Write("calibration", "raw-uint16", mode(5) + u16);
  Write("calibration", "raw-uint32", mode(6) + u32);
}

}  // namespace
}  // namespace fedprllm::fuzz

int main(int argc, char** argv) {
  using namespace fedprllm::fuzz;
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR [stories260K.bin]\n", argv[0]);
    return 2;
  }
  root = argv[1];
  MaskCodecSeeds();
  PayloadProtoSeeds();
  SafetensorsSeeds();
  CalibrationSeeds();
  Llama2cSeeds(argc > 2 ? argv[2] : "");
  std::printf("seeds written under %s\n", root.c_str());
  return 0;
}
