// Tokenizer over libsentencepiece.
#include "model/tokenizer.h"

#include <filesystem>

#include "absl/strings/str_cat.h"

namespace fedprllm {
namespace fs = std::filesystem;

Tokenizer::Tokenizer(std::unique_ptr<internal::SentencePieceAdapter> processor, std::string path)
    : processor_(std::move(processor)), path_(std::move(path)) {}
Tokenizer::Tokenizer(Tokenizer&&) = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) = default;
Tokenizer::~Tokenizer() = default;

absl::StatusOr<Tokenizer> Tokenizer::Load(const std::string& path) {
  std::string error;
  auto processor = internal::SentencePieceAdapter::Load(path, &error);
  if (processor == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("cannot load tokenizer ", path, ": ", error));
  }
  return Tokenizer(std::move(processor), path);
}

absl::StatusOr<std::vector<int>> Tokenizer::Encode(absl::string_view text, bool add_bos) const {
  std::vector<int> ids;
  std::string error;
  if (!processor_->Encode(std::string(text), &ids, &error)) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizing: ", error));
  }
  if (add_bos) ids.insert(ids.begin(), processor_->bos_id());
  return ids;
}

absl::StatusOr<std::string> Tokenizer::Decode(const std::vector<int>& ids) const {
  std::string text, error;
  if (!processor_->Decode(ids, &text, &error)) {
    return absl::InvalidArgumentError(absl::StrCat("detokenizing: ", error));
  }
  return text;
}

int Tokenizer::vocab_size() const { return processor_->vocab_size(); }
int Tokenizer::bos_id() const { return processor_->bos_id(); }

absl::StatusOr<std::string> FindTokenizer(const std::string& model_path, const std::string& explicit_path) {
  if (!explicit_path.empty()) return explicit_path;
  std::error_code ec;
  if (fs::is_directory(model_path, ec)) {
    const fs::path candidate = fs::path(model_path) / "tokenizer.model";
    if (fs::exists(candidate, ec)) return candidate.string();
    return absl::NotFoundError(absl::StrCat("no tokenizer.model in ", model_path, "; pass --tokenizer FILE"));
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
