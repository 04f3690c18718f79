// Tokenizer: dispatch between HfTokenizer (tokenizer.json) and libsentencepiece.
#include "model/tokenizer.h"

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "model/hf_tokenizer.h"

namespace fedprllm {
namespace fs = std::filesystem;

Tokenizer::Tokenizer(std::unique_ptr<internal::SentencePieceAdapter> processor, std::unique_ptr<HfTokenizer> hf,
                     std::string path)
    : processor_(std::move(processor)), hf_(std::move(hf)), path_(std::move(path)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

absl::StatusOr<Tokenizer> Tokenizer::Load(const std::string& path) {
  if (absl::EndsWith(path, ".json")) {
    absl::StatusOr<HfTokenizer> hf = HfTokenizer::Load(path);
    if (!hf.ok()) {
      return absl::Status(hf.status().code(),
                          absl::StrCat("cannot load tokenizer ", path, ": ", hf.status().message()));
    }
    return Tokenizer(nullptr, std::make_unique<HfTokenizer>(*std::move(hf)), path);
  }
  std::string error;
  auto processor = internal::SentencePieceAdapter::Load(path, &error);
  if (processor == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("cannot load tokenizer ", path, ": ", error));
  }
  return Tokenizer(std::move(processor), nullptr, path);
}

absl::StatusOr<std::vector<int>> Tokenizer::Encode(absl::string_view text, bool add_bos) const {
  if (hf_ != nullptr) {
    ASSIGN_OR_RETURN(std::vector<int> ids, hf_->Encode(text, /*add_special_tokens=*/false));
    if (add_bos) ids.insert(ids.begin(), hf_->prefix_ids().begin(), hf_->prefix_ids().end());
    return ids;
  }
  std::vector<int> ids;
  std::string error;
  if (!processor_->Encode(std::string(text), &ids, &error)) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizing: ", error));
  }
  if (add_bos) ids.insert(ids.begin(), processor_->bos_id());
  return ids;
}

absl::StatusOr<std::vector<int>> Tokenizer::EncodeWithSpecialTokens(absl::string_view text,
                                                                    bool add_special_tokens) const {
  if (hf_ != nullptr) return hf_->Encode(text, add_special_tokens);
  return Encode(text, add_special_tokens);
}

absl::StatusOr<std::string> Tokenizer::Decode(const std::vector<int>& ids) const {
  if (hf_ != nullptr) return hf_->Decode(ids, /*skip_special_tokens=*/true);
  std::string text, error;
  if (!processor_->Decode(ids, &text, &error)) {
    return absl::InvalidArgumentError(absl::StrCat("detokenizing: ", error));
  }
  return text;
}

int Tokenizer::vocab_size() const { return hf_ != nullptr ? hf_->vocab_size() : processor_->vocab_size(); }
int Tokenizer::bos_id() const { return hf_ != nullptr ? hf_->bos_id() : processor_->bos_id(); }
int Tokenizer::eos_id() const { return hf_ != nullptr ? hf_->eos_id() : processor_->eos_id(); }

absl::StatusOr<std::string> FindTokenizer(const std::string& model_path, const std::string& explicit_path) {
  if (!explicit_path.empty()) return explicit_path;
  std::error_code ec;
  if (fs::is_directory(model_path, ec)) {
    for (const char* name : {"tokenizer.json", "tokenizer.model"}) {
      const fs::path candidate = fs::path(model_path) / name;
      if (fs::is_regular_file(candidate, ec)) return candidate.string();
    }
    return absl::NotFoundError(
        absl::StrCat("neither tokenizer.json nor tokenizer.model in ", model_path, "; pass --tokenizer FILE"));
  }
  std::vector<fs::path> found;
  const fs::path dir = fs::path(model_path).parent_path().empty() ? fs::path(".") : fs::path(model_path).parent_path();
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.is_regular_file() && entry.path().extension() == ".model") found.push_back(entry.path());
  }
  if (found.size() == 1) return found[0].string();
  return absl::NotFoundError(absl::StrCat(found.empty() ? "no" : "more than one", " *.model file beside ", model_path,
                                          "; pass --tokenizer FILE"));
}

}  // namespace fedprllm
