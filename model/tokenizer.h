// Tokenizer: the model's tokenizer, either a Hugging Face tokenizer.json (model/hf_tokenizer.h:
// LLaMA-2/3, Mistral, Phi-3, SmolLM, GPT-2 style BPE) or a SentencePiece model (LLaMA-1/2
// tokenizer.model, llama2.c tok512.model); and the rule that finds the usual tokenizer file
// next to a model.
//
//   ASSIGN_OR_RETURN(std::string path, FindTokenizer(model_dir, flag_tokenizer));
//   ASSIGN_OR_RETURN(Tokenizer tokenizer, Tokenizer::Load(path));
//   ASSIGN_OR_RETURN(std::vector<int> ids, tokenizer.Encode(text, /*add_bos=*/true));
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/sentencepiece_adapter.h"

namespace fedprllm {

class HfTokenizer;

class Tokenizer {
 public:
  // Loads `path`: a path ending in ".json" is a Hugging Face tokenizer.json (BOS/EOS also from
  // tokenizer_config.json and special_tokens_map.json beside it), anything else a SentencePiece
  // model. Fails with the path and the reason.
  static absl::StatusOr<Tokenizer> Load(const std::string& path);
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Token ids of `text`. With `add_bos`, the leading special tokens the tokenizer adds to a
  // sequence: SentencePiece: BOS. tokenizer.json: exactly what its post-processor puts before
  // the text (TemplateProcessing "<s> $A" of LLaMA-2/TinyLlama/Mistral: <s>; "$A" of Phi-3,
  // ByteLevel or none of GPT-2/SmolLM: nothing, even though bos_id() may name a token).
  // Trailing special tokens (an EOS in a template) are never added here. Fails on invalid UTF-8.
  absl::StatusOr<std::vector<int>> Encode(absl::string_view text, bool add_bos) const;
  // Hugging Face's `encode(text, add_special_tokens=...)` exactly: for a tokenizer.json the
  // post-processor's tokens before and after the text when `add_special_tokens`; for
  // SentencePiece, BOS first (as LlamaTokenizer).
  absl::StatusOr<std::vector<int>> EncodeWithSpecialTokens(absl::string_view text, bool add_special_tokens) const;
  // Text of `ids`. Control and special tokens (BOS, EOS, added tokens marked special) are left
  // out. Fails on an id outside the vocabulary.
  absl::StatusOr<std::string> Decode(const std::vector<int>& ids) const;
  // Number of ids: for tokenizer.json the largest id of the model vocabulary and the added
  // tokens plus one; for SentencePiece the number of pieces.
  int vocab_size() const;
  // BOS / EOS token ids, -1 when the tokenizer has none (model/hf_tokenizer.h says where a
  // tokenizer.json's come from).
  int bos_id() const;
  int eos_id() const;
  // True for a tokenizer.json.
  bool is_hugging_face() const { return hf_ != nullptr; }
  const std::string& path() const { return path_; }

 private:
  Tokenizer(std::unique_ptr<internal::SentencePieceAdapter> processor, std::unique_ptr<HfTokenizer> hf,
            std::string path);
  // Exactly one of the two is set.
  std::unique_ptr<internal::SentencePieceAdapter> processor_;
  std::unique_ptr<HfTokenizer> hf_;
  std::string path_;
};

// Returns `explicit_path` when it is non-empty; otherwise the usual tokenizer of the model at
// `model_path`: inside a Hugging Face directory tokenizer.json when present (as transformers
// prefers it), else tokenizer.model; beside a llama2.c checkpoint the single *.model file.
// Fails with a message that names the files looked for and says to pass --tokenizer.
absl::StatusOr<std::string> FindTokenizer(const std::string& model_path, const std::string& explicit_path);

}  // namespace fedprllm
