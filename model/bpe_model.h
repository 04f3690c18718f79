// The BPE model of a Hugging Face tokenizer.json ("model": {"type": "BPE", ...}): vocabulary,
// ranked merges, byte fallback and unknown-token handling, as tokenizers' models/bpe does it
// with dropout off. Used by model/hf_tokenizer.cc, one pre-token ("word") at a time.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fedprllm::internal {

struct BpeOptions {
  // Token used for a character that is neither in the vocabulary nor byte-fallback encodable.
  // Default: none (such a character is dropped, as tokenizers does).
  std::optional<std::string> unk_token;
  // Prepended to every character but a word's first before lookup. Default: none.
  std::string continuing_subword_prefix;
  // Appended to a word's last character before lookup. Default: none.
  std::string end_of_word_suffix;
  // Consecutive unknown characters become one unk_token. Default: false.
  bool fuse_unk = false;
  // An unknown character becomes its UTF-8 bytes as <0xXX> tokens (when all are in the
  // vocabulary). Default: false.
  bool byte_fallback = false;
  // A word that is itself in the vocabulary is that one token, merges unused. Default: false.
  bool ignore_merges = false;
};

class BpeModel {
 public:
  // `vocab` maps each token to its id (>= 0). `merges` are in rank order (first = applied
  // first). Fails when a merge's parts or result, or the unk_token, are not in `vocab`; the
  // message names the merge by its index in `merges`.
  static absl::StatusOr<BpeModel> Create(absl::flat_hash_map<std::string, int> vocab,
                                         const std::vector<std::pair<std::string, std::string>>& merges,
                                         BpeOptions options);

  // Appends the ids of `word` (valid UTF-8) to *ids: every character becomes its token (or
  // byte-fallback / unk tokens), then the lowest-ranked adjacent pair is merged, leftmost
  // first among equal ranks, until no pair has a merge. O(n log n) in the word's characters.
  void Tokenize(absl::string_view word, std::vector<int>* ids) const;

  std::optional<int> TokenToId(absl::string_view token) const;
  const absl::flat_hash_map<std::string, int>& vocab() const { return vocab_; }
  size_t num_merges() const { return merges_.size(); }

 private:
  struct Merge {
    int rank;
    int new_id;
  };
  static uint64_t Key(int a, int b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  const Merge* FindMerge(int a, int b) const;

  absl::flat_hash_map<std::string, int> vocab_;
  absl::flat_hash_map<uint64_t, Merge> merges_;
  std::vector<int> rank_new_id_;  // rank -> the merged token's id (ranks are unique per pair)
  BpeOptions options_;
  int unk_id_ = -1;
  int byte_ids_[256];  // id of "<0xXX>" for each byte, -1 when absent
};

}  // namespace fedprllm::internal
