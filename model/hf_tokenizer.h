// HfTokenizer: a Hugging Face tokenizer.json (the "fast tokenizer" format) with a BPE model,
// giving the ids Hugging Face tokenizers gives. It covers the LLaMA family's two kinds:
//   * SentencePiece-style BPE with byte fallback (LLaMA-2, TinyLlama, Mistral, Phi-3):
//     Prepend/Replace normalizers or a Metaspace pre-tokenizer, <0xXX> byte tokens;
//   * byte-level BPE with regex pre-tokenizers (LLaMA-3, Qwen2, SmolLM, GPT-2): Split with a
//     PCRE2 regex, Digits, ByteLevel.
// Normalizers include the Unicode forms NFC, NFD, NFKC, NFKD and Lowercase (ICU,
// model/unicode_normalizer.h); Qwen2's files normalize to NFC.
// docs/tokenizers.md lists every supported component; anything else is refused at Load with
// a message that names the file and the key.
//
//   ASSIGN_OR_RETURN(HfTokenizer tok, HfTokenizer::Load("/models/tinyllama/tokenizer.json"));
//   ASSIGN_OR_RETURN(std::vector<int> ids, tok.Encode("Hello world", /*add_special_tokens=*/true));
//   ASSIGN_OR_RETURN(std::string text, tok.Decode(ids, /*skip_special_tokens=*/true));
//
// Most callers use fedprllm::Tokenizer (model/tokenizer.h), which picks this class for a
// .json path. All methods are const and thread-safe. No exception escapes.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace fedprllm {

class HfTokenizer {
 public:
  // Loads the tokenizer.json at `path`, and beside it, when present, tokenizer_config.json and
  // special_tokens_map.json (for BOS and EOS only, as transformers reads them). Fails with
  // the file and the key on a missing or malformed file or an unsupported component.
  static absl::StatusOr<HfTokenizer> Load(const std::string& path);
  // The same from file contents; an empty `tokenizer_config` / `special_tokens_map` means that
  // file is absent. `name` is used in error messages in place of the path.
  static absl::StatusOr<HfTokenizer> FromJson(absl::string_view tokenizer_json, absl::string_view tokenizer_config = "",
                                              absl::string_view special_tokens_map = "",
                                              const std::string& name = "tokenizer.json");
  HfTokenizer(HfTokenizer&&) noexcept;
  HfTokenizer& operator=(HfTokenizer&&) noexcept;
  ~HfTokenizer();

  // The ids Hugging Face tokenizers' `Tokenizer.encode(text, add_special_tokens).ids` gives:
  // added tokens matched in the text first, then normalizer, pre-tokenizer and BPE on the
  // rest; with `add_special_tokens`, the post-processor's tokens around them (prefix_ids()
  // before, suffix_ids() after). Truncation and padding are never applied. Fails on text that
  // is not valid UTF-8 (with the byte offset).
  absl::StatusOr<std::vector<int>> Encode(absl::string_view text, bool add_special_tokens) const;

  // The special tokens the post-processor puts before and after a single sequence
  // (TemplateProcessing "<s> $A" -> prefix {1}; ByteLevel or null -> none).
  const std::vector<int>& prefix_ids() const;
  const std::vector<int>& suffix_ids() const;

  // Text of `ids` through the decoder, as tokenizers' `decode(ids, skip_special_tokens)`;
  // with `skip_special_tokens`, added tokens marked special are left out. Fails on an id that
  // is neither an added token nor in the vocabulary.
  absl::StatusOr<std::string> Decode(absl::Span<const int> ids, bool skip_special_tokens) const;

  // The token string of `id` (added tokens first, then the model vocabulary), if any.
  std::optional<std::string> IdToToken(int id) const;
  // The id of `token` (added tokens first, then the model vocabulary), if any.
  std::optional<int> TokenToId(absl::string_view token) const;

  // Largest id among the model vocabulary and the added tokens, plus one.
  int vocab_size() const;
  // BOS / EOS: tokenizer_config.json's bos_token / eos_token (special_tokens_map.json's when
  // the config has no added_tokens_decoder, as transformers), else the post-processor's first
  // prefix / last suffix token, else a well-known added token (<s>, <|begin_of_text|>,
  // <|endoftext|> / </s>, <|end_of_text|>, <|endoftext|>). -1 when none (also when the config
  // sets the token to null). Whether Encode adds BOS is the post-processor's decision alone.
  int bos_id() const;
  int eos_id() const;

  // The parsed tokenizer; defined and built in hf_tokenizer.cc only.
  struct Impl;

 private:
  explicit HfTokenizer(std::unique_ptr<const Impl> impl);
  std::unique_ptr<const Impl> impl_;
};

}  // namespace fedprllm
