// Fuzz target: the mask wire codec's receiving side (common/mask_codec.h). The input is a
// payload header and its chunks in fuzz/payload_bytes.h's layout; MaskAssembler or
// Float32Assembler checks and decodes them (raw bits, zstd frames, float32), as the server
// does for uploads and the client for decisions. Every accepted mask payload must survive an
// EncodeMasks/DecodeMasks round trip unchanged.
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "common/mask_codec.h"
#include "fuzz/fuzz_support.h"
#include "fuzz/payload_bytes.h"

namespace fedprllm::fuzz {
namespace {

void FuzzMasks(const FuzzedPayload& in) {
  MaskExpectations expect;
  for (size_t i = 0; i < kFuzzTensorNames.size(); ++i) expect.shapes[kFuzzTensorNames[i]] = kFuzzTensorShapes[i];
  expect.pattern = (in.flags & kExpectTwoFour) ? MaskPattern{2, 4} : MaskPattern{};
  expect.max_tensor_raw_bytes = int64_t{1} << 20;
  if (in.flags & kSmallChunks) expect.max_chunk_bytes = 64;

  // Chunk by chunk, taking masks as they complete, as the server's upload reactor does.
  absl::StatusOr<MaskAssembler> assembler = MaskAssembler::Create(in.payload.header, expect);
  if (!Report("MaskAssembler::Create", assembler.status()).ok()) return;
  std::vector<PackedMask> masks;
  for (const PayloadChunk& chunk : in.payload.chunks) {
    if (!Report("AddChunk", assembler->AddChunk(chunk)).ok()) return;
    for (PackedMask& m : assembler->TakeDecoded()) masks.push_back(std::move(m));
  }
  absl::StatusOr<std::vector<PackedMask>> rest = assembler->Finish();
  if (!Report("Finish", rest.status()).ok()) return;
  for (PackedMask& m : *rest) masks.push_back(std::move(m));
  if (masks.size() != in.payload.header.tensors.size()) __builtin_trap();

  // The one-call path must agree, and what was accepted must encode back to the same masks.
  absl::StatusOr<std::vector<PackedMask>> again = DecodeMasks(in.payload, expect);
  if (!again.ok() || *again != masks) __builtin_trap();
  std::vector<std::pair<std::string, PackedMask>> named;
  for (size_t i = 0; i < masks.size(); ++i) named.emplace_back(in.payload.header.tensors[i].name, masks[i]);
  absl::StatusOr<EncodedPayload> encoded = EncodeMasks(named, expect.pattern, 64);
  if (!encoded.ok()) __builtin_trap();
  absl::StatusOr<std::vector<PackedMask>> round_trip = DecodeMasks(*encoded, expect);
  if (!round_trip.ok() || *round_trip != masks) __builtin_trap();
}

void FuzzFloat32(const FuzzedPayload& in) {
  Float32Expectations expect;
  expect.shape = kFuzzTensorShapes[0];
  if (!in.payload.header.tensors.empty()) {
    for (size_t i = 0; i < kFuzzTensorNames.size(); ++i) {
      if (in.payload.header.tensors[0].name == kFuzzTensorNames[i]) expect.shape = kFuzzTensorShapes[i];
    }
  }
  expect.max_raw_bytes = int64_t{1} << 20;
  if (in.flags & kSmallChunks) expect.max_chunk_bytes = 64;
  absl::StatusOr<std::vector<float>> values = DecodeFloat32(in.payload, expect);
  Report("DecodeFloat32", values.status());
  if (!values.ok()) return;
  int64_t numel = 1;
  for (int64_t d : expect.shape) numel *= d;
  if (static_cast<int64_t>(values->size()) != numel) __builtin_trap();
}

}  // namespace
}  // namespace fedprllm::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fedprllm::fuzz;
  ByteReader reader(data, size);
  const FuzzedPayload in = ReadPayloadBytes(reader);
  if (in.flags & kExpectWeightScale) {
    FuzzFloat32(in);
  } else {
    FuzzMasks(in);
  }
  return 0;
}
