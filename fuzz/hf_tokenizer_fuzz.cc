// Fuzz target: tokenizer.json loading (model/hf_tokenizer.h, HfTokenizer::FromJson, with the
// BPE model of model/bpe_model.h), then encoding and decoding one short fixed text that
// touches the normalizers and pre-tokenizers (spaces, digits, punctuation, accents, CJK, an
// emoji, tabs and newlines, special-token spellings).
#include <cstdint>
#include "absl/strings/string_view.h"
#include <vector>

#include "fuzz/fuzz_support.h"
#include "model/hf_tokenizer.h"

namespace {
constexpr absl::string_view kText = "Hello world! It's 2024: na\xc3\xafve caf\xc3\xa9, \xe6\x9d\xb1\xe4\xba\xac \xf0\x9f\x99\x82\n\t <s>x</s>  end";
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fedprllm;
  fuzz::QuietLogs();
  absl::StatusOr<HfTokenizer> tokenizer =
      HfTokenizer::FromJson(absl::string_view(reinterpret_cast<const char*>(data), size), "", "", "fuzz/tokenizer.json");
  fuzz::Report("FromJson", tokenizer.status());
  if (!tokenizer.ok()) return 0;
  for (bool special : {true, false}) {
    absl::StatusOr<std::vector<int>> ids = tokenizer->Encode(kText, special);
    fuzz::Report("Encode", ids.status());
    if (!ids.ok()) continue;
    (void)tokenizer->Decode(*ids, /*skip_special_tokens=*/true);
    (void)tokenizer->Decode(*ids, /*skip_special_tokens=*/false);
    for (int id : *ids) (void)tokenizer->IdToToken(id);
  }
  (void)tokenizer->TokenToId("Hello");
  (void)tokenizer->vocab_size();
  (void)tokenizer->bos_id();
  (void)tokenizer->eos_id();
  return 0;
}
