// Benchmark: the server's receive-and-vote path for one decoder layer of a real shape
// (default LLaMA-2-7B: 202 M prunable weights), with generated 50% masks from N sites. Per
// site it times the wire decode (MaskAssembler over the site's encoded payload: CRC32C and
// zstd) and the vote (GlobalPruner::AddClient), then the round's close (selection and
// application). Side by side it times memcpy of the same counter bytes and of the same mask
// bytes, and prints the ratios, then extrapolates a whole model and 64 sites from the
// measured layer (the method is printed with the figures). The vote add itself
// (VoteCounter::Add over every matrix of the layer) is also timed alone against a memcpy of
// the counter bytes, as a speed ratio (memcpy time / add time; 1 = memory speed). Runs at
// --threads intra-op threads (default 1).
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>

#include "absl/flags/flag.h"
#include "common/command_line.h"
#include "common/mask_codec.h"
#include "common/status_macros.h"
#include "engine/federation.h"
#include "engine/vote_aggregation.h"
#include "model/cpu_runtime.h"
#include "model/synthetic_checkpoint.h"

ABSL_FLAG(std::string, arch, "llama-2-7b", "Architecture whose decoder layer is measured (fedprllm-synth --list)");
ABSL_FLAG(int, sites, 8, "Sites whose masks are counted in the measured round");
ABSL_FLAG(int, max_sites, 255, "Sites the round allows (<= 255: 1-byte counters, else 2)");
ABSL_FLAG(int, extrapolate_sites, 64, "Sites of the extrapolated whole-model round");
ABSL_FLAG(int, threads, 1, "Intra-op threads (at::set_num_threads)");

namespace fedprllm {
namespace {

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

// A 50% mask in which every output row prunes half its weights at random positions, as a
// Wanda row-group mask does.
PackedMask HalfMask(const std::vector<int64_t>& shape, std::mt19937_64& rng) {
  const int64_t rows = shape[0], cols = shape[1];
  std::vector<uint8_t> bools(rows * cols, 0);
  std::vector<int64_t> order(cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) order[c] = c;
    for (int64_t k = 0; k < cols / 2; ++k) {
      std::swap(order[k], order[k + static_cast<int64_t>(rng() % static_cast<uint64_t>(cols - k))]);
      bools[r * cols + order[k]] = 1;
    }
  }
  return PackedMask::FromBools(shape, bools);
}

// Best of three memcpy runs of `bytes`, in seconds.
double MemcpySeconds(size_t bytes) {
  std::vector<uint8_t> from(bytes, 1), to(bytes, 0);
  double best = 1e9;
  for (int i = 0; i < 3; ++i) {
    const auto start = std::chrono::steady_clock::now();
    std::memcpy(to.data(), from.data(), bytes);
    best = std::min(best, Seconds(start));
  }
  if (to[bytes / 2] != 1) std::printf("memcpy failed\n");
  return best;
}

}  // namespace

absl::Status Run() {
  if (absl::GetFlag(FLAGS_threads) < 1) return absl::InvalidArgumentError("--threads must be >= 1");
  at::set_num_threads(absl::GetFlag(FLAGS_threads));
  ASSIGN_OR_RETURN(LlamaConfig arch, SyntheticArchitecture(absl::GetFlag(FLAGS_arch)));
  const int sites = absl::GetFlag(FLAGS_sites), max_sites = absl::GetFlag(FLAGS_max_sites);
  if (sites < 1 || sites > max_sites) return absl::InvalidArgumentError("need 1 <= --sites <= --max_sites");
  LlamaConfig config = arch;
  config.num_hidden_layers = 1;
  config.vocab_size = 256;  // only the decoder layer is measured
  config.dtype = at::kBFloat16;
  TensorMap tensors;
  for (const SafetensorsEntry& e : CheckpointEntries(config)) {
    tensors[e.name] = e.shape.size() == 1 ? at::ones(e.shape, at::kBFloat16) : at::randn(e.shape).to(at::kBFloat16);
  }
  ASSIGN_OR_RETURN(LlamaModel model, LlamaModel::FromTensors(config, std::move(tensors), "random layer"));
  AggregationOptions options;  // the paper's best: one-shot, layer group, 50%, no scaling
  GlobalPruner pruner(std::move(model), options);
  RETURN_IF_ERROR(pruner.OpenRound(0, {0}, max_sites));
  const auto expected = pruner.ExpectedTensors();
  int64_t weights = 0;
  MaskExpectations expect;
  for (const auto& [name, shape] : expected) {
    weights += NumElements(shape);
    expect.shapes[name] = shape;
  }
  std::printf("%s decoder layer: %lld prunable weights in %zu matrices; %d sites of at most %d; %d threads\n",
              absl::GetFlag(FLAGS_arch).c_str(), static_cast<long long>(weights), expected.size(), sites, max_sites,
              at::get_num_threads());

  // Two distinct site payloads, alternated: generating a mask per site would dominate.
  std::mt19937_64 rng(1);
  std::vector<EncodedPayload> payloads;
  for (int variant = 0; variant < 2; ++variant) {
    std::vector<std::pair<std::string, PackedMask>> masks;
    for (const auto& [name, shape] : expected) masks.emplace_back(name, HalfMask(shape, rng));
    ASSIGN_OR_RETURN(EncodedPayload p, EncodeMasks(masks, MaskPattern{}));
    payloads.push_back(std::move(p));
  }
  const int64_t wire_bytes = payloads[0].header.encoded_bytes;
  std::printf("one site's payload: %lld raw bytes, %lld on the wire (%.3f bits per weight)\n",
              static_cast<long long>(payloads[0].header.raw_bytes), static_cast<long long>(wire_bytes),
              8.0 * static_cast<double>(wire_bytes) / static_cast<double>(weights));

  double decode_seconds = 0, vote_seconds = 0;
  for (int s = 0; s < sites; ++s) {
    auto start = std::chrono::steady_clock::now();
    ASSIGN_OR_RETURN(std::vector<PackedMask> decoded, DecodeMasks(payloads[s % 2], expect));
    decode_seconds += Seconds(start);
    std::map<std::string, PackedMask> by_name;
    for (size_t i = 0; i < decoded.size(); ++i) by_name.emplace(expected[i].first, std::move(decoded[i]));
    start = std::chrono::steady_clock::now();
    RETURN_IF_ERROR(pruner.AddClient("site-" + std::to_string(s), by_name));
    vote_seconds += Seconds(start);
  }
  auto start = std::chrono::steady_clock::now();
  RETURN_IF_ERROR(pruner.CloseRound().status());
  const double close_seconds = Seconds(start);

  const int counter_bytes = max_sites <= 255 ? 1 : 2;
  const double memcpy_counters = MemcpySeconds(static_cast<size_t>(weights) * counter_bytes);
  const double memcpy_masks = MemcpySeconds(static_cast<size_t>(weights + 7) / 8);
  const double per_site_vote = vote_seconds / sites, per_site_decode = decode_seconds / sites;
  std::printf("\nper site and layer       seconds   weights/s   vs memcpy of the same bytes\n");
  std::printf("  decode (wire->mask)    %7.4f   %9.3g   %.2fx memcpy of the mask bytes (%.4f s)\n", per_site_decode,
              weights / per_site_decode, per_site_decode / memcpy_masks, memcpy_masks);
  std::printf("  vote (AddClient)       %7.4f   %9.3g   %.2fx memcpy of the %d-byte counters (%.4f s)\n",
              per_site_vote, weights / per_site_vote, per_site_vote / memcpy_counters, counter_bytes, memcpy_counters);
  std::printf("round close (select + apply, once per layer): %.3f s\n", close_seconds);

  // The vote add alone: every matrix's counter, fresh (zeroed, so its pages are mapped), takes
  // each site's masks; best of three sites against the best of three memcpy runs.
  {
    std::vector<std::vector<PackedMask>> site_masks(2);
    for (int variant = 0; variant < 2; ++variant) {
      ASSIGN_OR_RETURN(site_masks[variant], DecodeMasks(payloads[variant], expect));
    }
    std::vector<VoteCounter> counters;
    for (const auto& [name, shape] : expected) counters.emplace_back(shape, max_sites);
    double best_add = 1e9;
    for (int s = 0; s < std::max(sites, 3); ++s) {
      const auto add_start = std::chrono::steady_clock::now();
      for (size_t i = 0; i < counters.size(); ++i) RETURN_IF_ERROR(counters[i].Add(site_masks[s % 2][i]));
      best_add = std::min(best_add, Seconds(add_start));
      if (counters[0].num_clients() == counters[0].max_clients()) break;
    }
    // The portable kernel (spread tables, no SIMD) on counters of the same width, for scale.
    double best_portable = 1e9;
    for (int s = 0; s < 3; ++s) {
      std::vector<std::vector<uint8_t>> narrow(counters.size());
      std::vector<std::vector<uint16_t>> wide(counters.size());
      for (size_t i = 0; i < counters.size(); ++i) {
        if (counter_bytes == 1) narrow[i].assign(counters[i].numel(), 0);
        else wide[i].assign(counters[i].numel(), 0);
      }
      const auto portable_start = std::chrono::steady_clock::now();
      for (size_t i = 0; i < counters.size(); ++i) {
        const PackedMask& m = site_masks[s % 2][i];
        if (counter_bytes == 1) {
          vote_internal::AddBits(m.bytes().data(), m.numel(), narrow[i].data(), /*simd=*/false);
        } else {
          vote_internal::AddBits(m.bytes().data(), m.numel(), wide[i].data(), /*simd=*/false);
        }
      }
      best_portable = std::min(best_portable, Seconds(portable_start));
    }
    std::printf("vote add alone (VoteCounter::Add, %d thread(s)): %.4f s per site and layer, %.3g weights/s; "
                "memcpy of the %d-byte counters %.4f s: speed %.2fx memcpy (target >= 0.8x); "
                "portable kernel %.4f s (%.2fx memcpy)\n",
                at::get_num_threads(), best_add, weights / best_add, counter_bytes, memcpy_counters,
                memcpy_counters / best_add, best_portable, memcpy_counters / best_portable);
  }

  const int64_t layers = arch.num_hidden_layers;
  const int big = absl::GetFlag(FLAGS_extrapolate_sites);
  const double model_seconds = layers * (big * (per_site_decode + per_site_vote) + close_seconds);
  std::printf("\nextrapolated: %s, %lld layers x %d sites = %lld layers x (%d x (decode + vote) + close) "
              "from the layer above: %.0f s (%.1f min) of server CPU for the votes and decisions, "
              "%.3g weight-votes per second\n",
              absl::GetFlag(FLAGS_arch).c_str(), static_cast<long long>(layers), big, static_cast<long long>(layers),
              big, model_seconds, model_seconds / 60, static_cast<double>(weights) * layers * big / model_seconds);
  return absl::OkStatus();
}

}  // namespace fedprllm

int main(int argc, char** argv) {
  fedprllm::ParseCommandLine(argc, argv, "fedprllm-bench-vote [--arch llama-2-7b] [--sites 8]");
  fedprllm::UseAllCores();
  const absl::Status status = fedprllm::Run();
  if (!status.ok()) {
    std::fprintf(stderr, "fedprllm-bench-vote: error: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
