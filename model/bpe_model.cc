// BpeModel: tokenizers' BPE::merge_word and Word::merge_all, dropout off.
#include "model/bpe_model.h"

#include <functional>
#include <queue>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "model/utf8.h"

namespace fedprllm::internal {

absl::StatusOr<BpeModel> BpeModel::Create(absl::flat_hash_map<std::string, int> vocab,
                                          const std::vector<std::pair<std::string, std::string>>& merges,
                                          BpeOptions options) {
  BpeModel model;
  model.vocab_ = std::move(vocab);
  model.options_ = std::move(options);
  for (int b = 0; b < 256; ++b) {
    auto it = model.vocab_.find(absl::StrFormat("<0x%02X>", b));
    model.byte_ids_[b] = it == model.vocab_.end() ? -1 : it->second;
  }
  if (model.options_.unk_token.has_value()) {
    auto it = model.vocab_.find(*model.options_.unk_token);
    if (it == model.vocab_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("unk_token \"", *model.options_.unk_token, "\" is not in the vocabulary"));
    }
    model.unk_id_ = it->second;
  }
  const size_t prefix_len = model.options_.continuing_subword_prefix.size();
  model.merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    // Named references, not a structured binding: C++17 lambdas cannot capture those (clang).
    const auto& a = merges[rank].first;
    const auto& b = merges[rank].second;
    auto describe = [&](absl::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat("merge ", rank, " (\"", a, "\" \"", b, "\"): ", what));
    };
    auto ia = model.vocab_.find(a);
    if (ia == model.vocab_.end()) return describe(absl::StrCat("\"", a, "\" is not in the vocabulary"));
    auto ib = model.vocab_.find(b);
    if (ib == model.vocab_.end()) return describe(absl::StrCat("\"", b, "\" is not in the vocabulary"));
    if (b.size() < prefix_len) return describe("the second part is shorter than continuing_subword_prefix");
    const std::string merged = absl::StrCat(a, absl::string_view(b).substr(prefix_len));
    auto im = model.vocab_.find(merged);
    if (im == model.vocab_.end()) return describe(absl::StrCat("the result \"", merged, "\" is not in the vocabulary"));
    // A repeated pair keeps its last rank, as tokenizers' HashMap collect does.
    model.merges_[Key(ia->second, ib->second)] = Merge{static_cast<int>(rank), im->second};
    model.rank_new_id_.push_back(im->second);
  }
  return model;
}

std::optional<int> BpeModel::TokenToId(absl::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const BpeModel::Merge* BpeModel::FindMerge(int a, int b) const {
  auto it = merges_.find(Key(a, b));
  return it == merges_.end() ? nullptr : &it->second;
}

void BpeModel::Tokenize(absl::string_view word, std::vector<int>* ids) const {
  if (word.empty()) return;
  if (options_.ignore_merges) {
    if (auto id = TokenToId(word); id.has_value()) {
      ids->push_back(*id);
      return;
    }
  }
  struct Symbol {
    int id;
    int prev, next;  // indices into symbols, -1 at the ends
    bool alive;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  auto add = [&symbols](int id) {
    const int n = static_cast<int>(symbols.size());
    if (n > 0) symbols.back().next = n;
    symbols.push_back(Symbol{id, n - 1, -1, true});
  };

  const bool affixed = !options_.continuing_subword_prefix.empty() || !options_.end_of_word_suffix.empty();
  std::string piece;
  int pending_unk = -1;  // an unk token not yet added (so that fuse_unk can extend it)
  for (size_t pos = 0; pos < word.size();) {
    const size_t len = Utf8CharLength(word, pos);
    absl::string_view s = word.substr(pos, len);
    const bool first = pos == 0;
    pos += len;
    const bool last = pos >= word.size();
    if (affixed) {
      piece.clear();
      if (!first) piece.append(options_.continuing_subword_prefix);
      piece.append(s.data(), s.size());
      if (last) piece.append(options_.end_of_word_suffix);
      s = piece;
    }
    if (auto it = vocab_.find(s); it != vocab_.end()) {
      if (pending_unk >= 0) add(pending_unk);
      pending_unk = -1;
      add(it->second);
      continue;
    }
    if (options_.byte_fallback) {
      bool all = true;
      for (char c : s) all = all && byte_ids_[static_cast<unsigned char>(c)] >= 0;
      if (all) {
        // As tokenizers: the byte tokens go in without flushing a pending unk first.
        for (char c : s) add(byte_ids_[static_cast<unsigned char>(c)]);
        continue;
      }
    }
    if (unk_id_ >= 0) {
      if (pending_unk >= 0 && !options_.fuse_unk) add(pending_unk);
      pending_unk = unk_id_;
    }
  }
  if (pending_unk >= 0) add(pending_unk);

  // Queue entries are rank << 32 | position: the smallest is the lowest rank, and among equal
  // ranks the leftmost, the order tokenizers' Word::merge_all pops its heap in. The merged
  // token of an entry is rank_new_id_[rank].
  auto entry = [](int rank, int position) {
    return (static_cast<uint64_t>(rank) << 32) | static_cast<uint32_t>(position);
  };
  std::vector<uint64_t> initial;
  initial.reserve(symbols.size());
  for (size_t i = 0; i + 1 < symbols.size(); ++i) {
    if (const Merge* m = FindMerge(symbols[i].id, symbols[i + 1].id))
      initial.push_back(entry(m->rank, static_cast<int>(i)));
  }
  std::priority_queue<uint64_t, std::vector<uint64_t>, std::greater<uint64_t>> queue(std::greater<uint64_t>(),
                                                                                     std::move(initial));
  while (!queue.empty()) {
    const uint64_t top = queue.top();
    queue.pop();
    const int top_pos = static_cast<int>(top & 0xFFFFFFFFu);
    const int new_id = rank_new_id_[top >> 32];
    Symbol& left = symbols[top_pos];
    if (!left.alive || left.next < 0) continue;
    const int right_pos = left.next;
    const Symbol right = symbols[right_pos];
    // A stale entry: the pair here has changed since it was queued (tokenizers compares the
    // merged token, not the rank; so does this).
    const Merge* current = FindMerge(left.id, right.id);
    if (current == nullptr || current->new_id != new_id) continue;
    left.id = new_id;
    left.next = right.next;
    symbols[right_pos].alive = false;
    if (right.next >= 0) symbols[right.next].prev = top_pos;
    if (left.prev >= 0) {
      if (const Merge* m = FindMerge(symbols[left.prev].id, left.id)) queue.push(entry(m->rank, left.prev));
    }
    if (left.next >= 0) {
      if (const Merge* m = FindMerge(left.id, symbols[left.next].id)) queue.push(entry(m->rank, top_pos));
    }
  }
  for (const Symbol& symbol : symbols) {
    if (symbol.alive) ids->push_back(symbol.id);
  }
}

}  // namespace fedprllm::internal
