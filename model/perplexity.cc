// Windowed perplexity evaluation, batches side by side on the CPU pool for small models.
#include "model/perplexity.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <fstream>
#include <mutex>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "model/cpu_runtime.h"
#include "model/torch_wall.h"

namespace fedprllm {

absl::StatusOr<std::string> ReadTextFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

int64_t NormalizeCrlf(std::string* text) {
  int64_t replaced = 0;
  size_t out = 0;
  for (size_t in = 0; in < text->size(); ++in) {
    if ((*text)[in] == '\r' && in + 1 < text->size() && (*text)[in + 1] == '\n') {
      ++replaced;
      continue;  // the '\n' is copied next
    }
    (*text)[out++] = (*text)[in];
  }
  text->resize(out);
  return replaced;
}

std::string CrlfNote(const std::string& path, int64_t count) {
  return absl::StrCat(path, ": ", count, " CRLF line ends normalized to LF before tokenizing");
}

absl::StatusOr<std::string> ReadTextForTokenizing(const std::string& path, int64_t* crlf_replaced) {
  ASSIGN_OR_RETURN(std::string text, ReadTextFile(path));
  const int64_t replaced = NormalizeCrlf(&text);
  if (crlf_replaced != nullptr) *crlf_replaced = replaced;
  return text;
}

absl::Status CheckSeqlenFitsModel(absl::string_view what, int64_t seqlen, const LlamaConfig& config) {
  const absl::Status fits = config.CheckSequenceLength(seqlen);
  if (fits.ok()) return fits;
  if (config.max_sequence_length() != config.max_position_embeddings) {  // a window or dynamic RoPE
    return absl::InvalidArgumentError(absl::StrCat(what, " ", seqlen, ": ", fits.message()));
  }
  return absl::InvalidArgumentError(absl::StrCat(what, " ", seqlen, " exceeds the model's max_position_embeddings ",
                                                 config.max_position_embeddings));
}

absl::StatusOr<double> SumNll(const LlamaModel& model, const at::Tensor& tokens, const ComputeOptions& compute) {
  ASSIGN_OR_RETURN(at::Tensor logits, model.Forward(tokens, compute));
  return TorchCall("computing NLL", [&] {
    const int64_t seq = tokens.size(1);
    const at::Tensor log_probs = at::log_softmax(logits.narrow(1, 0, seq - 1).to(at::kDouble), -1);
    const at::Tensor targets = tokens.narrow(1, 1, seq - 1).to(log_probs.device(), at::kLong).unsqueeze(-1);
    return -log_probs.gather(-1, targets).sum().item<double>();
  });
}

absl::StatusOr<PerplexityResult> EvaluatePerplexity(const LlamaModel& model, const std::vector<int>& tokens,
                                                    const PerplexityOptions& options, const ProgressCallback& progress) {
  if (options.seqlen < 2) return absl::InvalidArgumentError(absl::StrCat("seqlen ", options.seqlen, " must be >= 2"));
  RETURN_IF_ERROR(CheckSeqlenFitsModel("seqlen", options.seqlen, model.config()));
  if (options.batch_size < 1) return absl::InvalidArgumentError("batch_size must be >= 1");
  int64_t windows = static_cast<int64_t>(tokens.size()) / options.seqlen;
  if (options.max_windows > 0) windows = std::min(windows, options.max_windows);
  if (windows == 0) {
    return absl::InvalidArgumentError(absl::StrCat("text has ", tokens.size(), " tokens, fewer than one window of ",
                                                   options.seqlen));
  }
  // Batch b holds windows [b * batch_size, ...). A small model on the CPU evaluates its
  // batches side by side on the pool's threads, each forward single-threaded (ATen runs the
  // nested operations inline); anything else evaluates them one after another with every
  // operation on the pool. Either way the NLLs are summed in batch order, so the result does
  // not depend on the thread count.
  const int64_t batches = (windows + options.batch_size - 1) / options.batch_size;
  std::vector<double> nll(batches, 0.0);
  std::vector<absl::Status> failed(batches);
  auto evaluate = [&](int64_t b) -> absl::Status {
    const int64_t start = b * options.batch_size, count = std::min(options.batch_size, windows - start);
    ASSIGN_OR_RETURN(at::Tensor batch, TorchCall("building evaluation batch", [&] {
      return at::from_blob(const_cast<int*>(tokens.data()) + start * options.seqlen, {count, options.seqlen},
                           at::TensorOptions().dtype(at::kInt))
          .to(at::kLong);
    }));
    ASSIGN_OR_RETURN(nll[b], SumNll(model, batch, options.compute));
    return absl::OkStatus();
  };
  const bool side_by_side = options.compute.device.is_cpu() && IsSmallModel(model.config().hidden_size) &&
                            batches > 1 && at::get_num_threads() > 1 && !at::in_parallel_region();
  if (side_by_side) {
    std::mutex progress_mutex;
    int64_t done = 0;
    at::parallel_for(0, batches, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        failed[b] = evaluate(b);
        if (progress) {
          std::lock_guard<std::mutex> lock(progress_mutex);
          done += std::min(options.batch_size, windows - b * options.batch_size);
          progress(done, windows);
        }
      }
    });
    for (const absl::Status& status : failed) RETURN_IF_ERROR(status);
  } else {
    for (int64_t b = 0; b < batches; ++b) {
      RETURN_IF_ERROR(evaluate(b));
      if (progress) progress(std::min(windows, (b + 1) * options.batch_size), windows);
    }
  }
  double total_nll = 0;
  for (double part : nll) total_nll += part;
  PerplexityResult result;
  result.windows = windows;
  result.predicted_tokens = windows * (options.seqlen - 1);
  result.mean_nll = total_nll / static_cast<double>(result.predicted_tokens);
  result.perplexity = std::exp(result.mean_nll);
  return result;
}

}  // namespace fedprllm
