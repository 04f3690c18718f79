// The sentencepiece module: SentencePieceAdapter over sentencepiece::SentencePieceProcessor,
// built as a shared object that Tokenizer loads with RTLD_DEEPBIND. Includes no abseil.
#include "model/sentencepiece_adapter.h"

#include <sentencepiece_processor.h>

namespace fedprllm::internal {
namespace {

class Adapter : public SentencePieceAdapter {
 public:
  bool Load(const std::string& path, std::string* error) {
    const auto status = processor_.Load(path);
    if (!status.ok()) *error = status.ToString();
    return status.ok();
  }
  bool Encode(const std::string& text, std::vector<int>* ids, std::string* error) const override {
    const auto status = processor_.Encode(text, ids);
    if (!status.ok()) *error = status.ToString();
    return status.ok();
  }
  bool Decode(const std::vector<int>& ids, std::string* text, std::string* error) const override {
    const auto status = processor_.Decode(ids, text);
    if (!status.ok()) *error = status.ToString();
    return status.ok();
  }
  int vocab_size() const override { return processor_.GetPieceSize(); }
  int bos_id() const override { return processor_.bos_id(); }
  int eos_id() const override { return processor_.eos_id(); }

 private:
  sentencepiece::SentencePieceProcessor processor_;
};

}  // namespace

}  // namespace fedprllm::internal

// The module's one entry point; see kSentencePieceEntryPoint.
extern "C" fedprllm::internal::SentencePieceAdapter* fedprllm_sentencepiece_load(const std::string* path,
                                                                                 std::string* error) {
  auto adapter = std::make_unique<fedprllm::internal::Adapter>();
  if (!adapter->Load(*path, error)) return nullptr;
  return adapter.release();
}
