// Tokenizer: a SentencePiece model (LLaMA-1/2 tokenizer.model, llama2.c tok512.model),
// and the rule that finds the usual tokenizer file next to a model.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

#include "model/sentencepiece_adapter.h"

namespace fedprllm {

class Tokenizer {
 public:
  static absl::StatusOr<Tokenizer> Load(const std::string& path);
  Tokenizer(Tokenizer&&);
  Tokenizer& operator=(Tokenizer&&);
  ~Tokenizer();

  // Token ids of `text`, with BOS first when `add_bos`. Fails on invalid UTF-8.
  absl::StatusOr<std::vector<int>> Encode(absl::string_view text, bool add_bos) const;
  absl::StatusOr<std::string> Decode(const std::vector<int>& ids) const;
  int vocab_size() const;
  int bos_id() const;
  const std::string& path() const { return path_; }

 private:
  Tokenizer(std::unique_ptr<internal::SentencePieceAdapter> processor, std::string path);
  std::unique_ptr<internal::SentencePieceAdapter> processor_;
  std::string path_;
};

// Returns `explicit_path` when it is non-empty; otherwise the usual tokenizer of the model
// at `model_path`: tokenizer.model inside a Hugging Face directory, or the single *.model
// file beside a llama2.c checkpoint. Fails with a message saying to pass --tokenizer.
absl::StatusOr<std::string> FindTokenizer(const std::string& model_path, const std::string& explicit_path);

}  // namespace fedprllm
