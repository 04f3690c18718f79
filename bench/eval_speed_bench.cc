// Benchmark: evaluation throughput of the project's forward pass against a plain LibTorch
// forward computed the way the Python reference (Hugging Face's eager LlamaAttention) does it:
// repeat_kv copies, the full [seq, seq] score matrix masked with -inf, torch.softmax over every
// entry. Both run in this process on the same windows of a real text, at one thread (or
// --threads), alternated for --repeats rounds; the best round of each is reported. Prints
// tokens/s both ways, their ratio, the largest logit difference (the comparison is honest only
// if it is small), and the FLOP/s of the causal work actually needed, by the formula it
// prints, as a fraction of the stated peak of this CPU.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/command_line.h"
#include "common/status_macros.h"
#include "model/cpu_runtime.h"
#include "model/model_and_tokenizer.h"
#include "model/perplexity.h"
#include "model/rotary_embedding.h"
#include "model/torch_wall.h"

ABSL_FLAG(std::string, model, "models/stories260K/stories260K.bin", "Model (llama2.c .bin or Hugging Face directory)");
ABSL_FLAG(std::string, text, "/work/shared/data/tinystories/tinystories_val.txt", "Text whose windows are evaluated");
ABSL_FLAG(int64_t, seqlen, 256, "Tokens per window");
ABSL_FLAG(int64_t, batch_size, 8, "Windows per forward pass");
ABSL_FLAG(int64_t, windows, 64, "Windows evaluated per round (a multiple of --batch_size)");
ABSL_FLAG(int, repeats, 5, "Rounds per implementation, alternated; the best is reported");
ABSL_FLAG(int, threads, 1, "Intra-op threads (at::set_num_threads)");
ABSL_FLAG(double, peak_gflops_per_core, 112.0,
          "Peak float32 GFLOP/s of one core (Zen 3 AVX2+FMA: 2 FMA units x 8 lanes x 2 FLOP x ~3.5 GHz)");

namespace fedprllm {
namespace {

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

// transformers' LlamaRMSNorm.
at::Tensor ReferenceRmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const at::Tensor x32 = x.to(at::kFloat);
  const at::Tensor variance = x32.pow(2).mean(-1, /*keepdim=*/true);
  return weight * (x32 * at::rsqrt(variance + eps)).to(x.scalar_type());
}

at::Tensor RotateHalf(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

// The Python reference's forward: float32, no biases (checked by the caller), positions 0..seq-1.
// Weights come from the model; nothing of the project's forward is used but the embedding table
// lookup and the RoPE angles (RopeAngles, the formula transformers uses).
at::Tensor ReferenceForward(const LlamaModel& model, const std::vector<DecoderLayerWeights>& layers,
                            const at::Tensor& embed, const at::Tensor& norm, const at::Tensor& head,
                            const at::Tensor& tokens) {
  const LlamaConfig& c = model.config();
  const int64_t batch = tokens.size(0), seq = tokens.size(1);
  const int64_t heads = c.num_attention_heads, kv_heads = c.num_key_value_heads, dim = c.head_dim();
  const int64_t group = heads / kv_heads;
  at::Tensor h = embed.index_select(0, tokens.reshape({-1})).view({batch, seq, c.hidden_size});
  // Once per forward, as LlamaModel.forward builds them: rotary cos/sin and the causal mask.
  const at::Tensor angles = RopeAngles(c, 0, seq, seq, at::kCPU);
  const at::Tensor cos = angles.cos(), sin = angles.sin();  // [seq, dim], broadcast over heads
  const at::Tensor mask = at::full({seq, seq}, -std::numeric_limits<float>::infinity()).triu_(1);
  for (const DecoderLayerWeights& w : layers) {
    const at::Tensor x = ReferenceRmsNorm(h, w.input_layernorm, c.rms_norm_eps);
    at::Tensor q = at::matmul(x, w.linears[0].t()).view({batch, seq, heads, dim}).transpose(1, 2);
    at::Tensor k = at::matmul(x, w.linears[1].t()).view({batch, seq, kv_heads, dim}).transpose(1, 2);
    at::Tensor v = at::matmul(x, w.linears[2].t()).view({batch, seq, kv_heads, dim}).transpose(1, 2);
    q = q * cos + RotateHalf(q) * sin;
    k = k * cos + RotateHalf(k) * sin;
    // repeat_kv: [b, kv, s, d] -> [b, kv * group, s, d].
    k = k.unsqueeze(2).expand({batch, kv_heads, group, seq, dim}).reshape({batch, heads, seq, dim});
    v = v.unsqueeze(2).expand({batch, kv_heads, group, seq, dim}).reshape({batch, heads, seq, dim});
    at::Tensor scores = at::matmul(q, k.transpose(2, 3)) / std::sqrt(static_cast<double>(dim));
    scores = scores + mask;
    const at::Tensor probs = at::softmax(scores, -1, at::kFloat);
    const at::Tensor attn = at::matmul(probs, v).transpose(1, 2).reshape({batch, seq, heads * dim});
    h = h + at::matmul(attn, w.linears[3].t());
    const at::Tensor y = ReferenceRmsNorm(h, w.post_attention_layernorm, c.rms_norm_eps);
    h = h + at::matmul(at::silu(at::matmul(y, w.linears[4].t())) * at::matmul(y, w.linears[5].t()),
                       w.linears[6].t());
  }
  return at::matmul(ReferenceRmsNorm(h, norm, c.rms_norm_eps), head.t());
}

}  // namespace

absl::Status Run() {
  const int threads = absl::GetFlag(FLAGS_threads);
  if (threads < 1) return absl::InvalidArgumentError("--threads must be >= 1");
  at::set_num_threads(threads);
  ASSIGN_OR_RETURN(ModelAndTokenizer loaded, LoadModelAndTokenizer(absl::GetFlag(FLAGS_model)));
  const LlamaModel& model = loaded.model;
  const LlamaConfig& c = model.config();
  for (bool bias : c.linear_has_bias()) {
    if (bias) return absl::InvalidArgumentError("the reference forward here has no biases; pick a model without");
  }
  const int64_t seqlen = absl::GetFlag(FLAGS_seqlen), batch = absl::GetFlag(FLAGS_batch_size);
  const int64_t windows = absl::GetFlag(FLAGS_windows);
  const int repeats = absl::GetFlag(FLAGS_repeats);
  if (batch < 1 || windows < batch || windows % batch != 0 || repeats < 1) {
    return absl::InvalidArgumentError("need --batch_size >= 1, --windows a positive multiple of it, --repeats >= 1");
  }
  RETURN_IF_ERROR(CheckSeqlenFitsModel("--seqlen", seqlen, c));
  ASSIGN_OR_RETURN(std::string text, ReadTextForTokenizing(absl::GetFlag(FLAGS_text), nullptr));
  ASSIGN_OR_RETURN(std::vector<int> ids, loaded.tokenizer.Encode(text, /*add_bos=*/true));
  if (static_cast<int64_t>(ids.size()) < windows * seqlen) {
    return absl::InvalidArgumentError(absl::StrCat("the text has ", ids.size(), " tokens, fewer than ",
                                                   windows, " windows of ", seqlen));
  }
  ComputeOptions compute;  // CPU, the model's dtype (float32 for stories260K)
  std::vector<DecoderLayerWeights> layers;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    ASSIGN_OR_RETURN(DecoderLayerWeights w, model.Layer(l, compute));
    layers.push_back(std::move(w));
  }
  ASSIGN_OR_RETURN(at::Tensor embed, model.tensor("model.embed_tokens.weight"));
  ASSIGN_OR_RETURN(at::Tensor norm, model.tensor("model.norm.weight"));
  ASSIGN_OR_RETURN(at::Tensor head, model.tensor(c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight"));
  std::vector<at::Tensor> batches;
  RETURN_IF_ERROR(TorchCall("building batches", [&] {
    for (int64_t start = 0; start < windows; start += batch) {
      batches.push_back(at::from_blob(ids.data() + start * seqlen, {batch, seqlen}, at::TensorOptions().dtype(at::kInt))
                            .to(at::kLong));
    }
  }));

  // Agreement first, on the first batch: the speed comparison means something only if both
  // compute the same logits.
  double max_diff = 0, max_logit = 0;
  RETURN_IF_ERROR(TorchCall("comparing logits", [&]() -> absl::Status {
    ASSIGN_OR_RETURN(at::Tensor ours, model.Forward(batches[0], compute));
    const at::Tensor theirs = ReferenceForward(model, layers, embed, norm, head, batches[0]);
    max_diff = (ours - theirs).abs().max().item<double>();
    max_logit = theirs.abs().max().item<double>();
    return absl::OkStatus();
  }));

  double best_reference = 1e30, best_project = 1e30;
  double nll_reference = 0, nll_project = 0;
  for (int r = 0; r < repeats; ++r) {
    RETURN_IF_ERROR(TorchCall("reference forward", [&] {
      const auto start = std::chrono::steady_clock::now();
      for (const at::Tensor& b : batches) ReferenceForward(model, layers, embed, norm, head, b);
      best_reference = std::min(best_reference, Seconds(start));
    }));
    const auto start = std::chrono::steady_clock::now();
    for (const at::Tensor& b : batches) RETURN_IF_ERROR(model.Forward(b, compute).status());
    best_project = std::min(best_project, Seconds(start));
  }
  // Perplexity of these windows both ways (outside the timing), as a second agreement check.
  RETURN_IF_ERROR(TorchCall("NLL", [&]() -> absl::Status {
    for (const at::Tensor& b : batches) {
      const at::Tensor logits = ReferenceForward(model, layers, embed, norm, head, b);
      const at::Tensor lp = at::log_softmax(logits.narrow(1, 0, seqlen - 1).to(at::kDouble), -1);
      nll_reference -= lp.gather(-1, b.narrow(1, 1, seqlen - 1).unsqueeze(-1)).sum().item<double>();
      ASSIGN_OR_RETURN(double nll, SumNll(model, b, compute));
      nll_project += nll;
    }
    return absl::OkStatus();
  }));

  // The causal work: per window of S tokens, 2 FLOP per multiply-add of every linear
  // (P = layers x (q + k + v + o + gate + up + down weights) + LM head weights) for each token,
  // and for the token at position t (0-based) per layer 2 x q_dim x (t + 1) for q.k and as
  // many for p.v: attention FLOP per window = 4 x layers x q_dim x S(S + 1)/2.
  const int64_t layers_n = c.num_hidden_layers, hidden = c.hidden_size;
  const int64_t params = layers_n * (hidden * c.q_dim() + 2 * hidden * c.kv_dim() + c.q_dim() * hidden +
                                     3 * hidden * c.intermediate_size) +
                         hidden * c.vocab_size;
  const double attention = 4.0 * layers_n * c.q_dim() * (seqlen * (seqlen + 1) / 2.0);
  const double flop_per_window = 2.0 * params * seqlen + attention;
  const double tokens = static_cast<double>(windows * seqlen);
  const double peak = absl::GetFlag(FLAGS_peak_gflops_per_core) * 1e9 * threads;
  std::printf("model %s: hidden %lld, %lld layers, %lld heads (%lld kv), head_dim %lld, vocab %lld\n",
              absl::GetFlag(FLAGS_model).c_str(), static_cast<long long>(hidden), static_cast<long long>(layers_n),
              static_cast<long long>(c.num_attention_heads), static_cast<long long>(c.num_key_value_heads),
              static_cast<long long>(c.head_dim()), static_cast<long long>(c.vocab_size));
  std::printf("%lld windows of %lld tokens in batches of %lld, %d thread(s), best of %d alternated rounds\n",
              static_cast<long long>(windows), static_cast<long long>(seqlen), static_cast<long long>(batch), threads,
              repeats);
  std::printf("logits: max |project - reference| = %.3g (max |logit| %.3g); mean NLL %.9f vs %.9f (rel diff %.2g)\n",
              max_diff, max_logit, nll_project / (windows * (seqlen - 1)), nll_reference / (windows * (seqlen - 1)),
              std::abs(nll_project - nll_reference) / std::abs(nll_reference));
  std::printf("FLOP formula per window of S tokens: 2*P*S + 4*layers*q_dim*S*(S+1)/2, P = %lld matmul weights "
              "(linears + LM head), q_dim %lld: %.4g FLOP per window (%.4g per token)\n",
              static_cast<long long>(params), static_cast<long long>(c.q_dim()), flop_per_window,
              flop_per_window / seqlen);
  std::printf("peak: %.1f GFLOP/s per core (constant, --peak_gflops_per_core) x %d thread(s) = %.1f GFLOP/s\n",
              absl::GetFlag(FLAGS_peak_gflops_per_core), threads, peak / 1e9);
  auto report = [&](const char* name, double seconds) {
    const double flops = flop_per_window * windows / seconds;
    std::printf("  %-34s %8.4f s  %10.0f tokens/s  %6.2f GFLOP/s  %5.1f%% of peak\n", name, seconds,
                tokens / seconds, flops / 1e9, 100.0 * flops / peak);
  };
  report("reference (full masked softmax)", best_reference);
  report("project (LlamaModel::Forward)", best_project);
  if (__builtin_cpu_supports("avx512f")) {
    // The constant is an AVX2 peak; this CPU's 512-bit FMAs can double it, and both the
    // attention kernel and OpenBLAS use them here.
    const double flops = flop_per_window * windows / best_project;
    std::printf("this CPU has AVX-512F (the attention kernel and OpenBLAS use it): against twice the constant "
                "(%.1f GFLOP/s) the project runs at %.1f%% of peak\n",
                2 * peak / 1e9, 100.0 * flops / (2 * peak));
  }
  std::printf("ratio project / reference tokens/s: %.2fx (target >= 2x, goal 3x)\n", best_reference / best_project);
  return absl::OkStatus();
}

}  // namespace fedprllm

int main(int argc, char** argv) {
  fedprllm::ParseCommandLine(argc, argv, "fedprllm-bench-eval [--model M] [--text FILE] [--threads 1]");
  const absl::Status status = fedprllm::Run();
  if (!status.ok()) {
    std::fprintf(stderr, "fedprllm-bench-eval: error: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
