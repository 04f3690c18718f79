// Benchmark: the secure sum's overhead for one exact-strategy round of a LLaMA-7B decoder
// layer (23,296 column sums + 4 token counts = 23,300 words) with N sites (default 64), in
// one process. It times each site's steps (keys, shares, masking) and the server's
// unmasking with no drop-out and with one site dropped after the key exchange, counts the
// bytes each site sends, and prints them beside the plain statistics (the same sum
// unprotected) and the 1-bit masks the voting strategies send for the same layer.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <unistd.h>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/command_line.h"
#include "common/status_macros.h"
#include "secagg/secure_sum.h"

ABSL_FLAG(int, sites, 64, "Sites in the aggregation (3..255)");
ABSL_FLAG(int, threshold, 0, "Shamir threshold (0: sites/2 + 1)");
ABSL_FLAG(int64_t, words, 3 * 4096 + 11008 + 4, "Words per vector (default: one LLaMA-7B layer's statistics)");
ABSL_FLAG(int64_t, mask_weights, 202375168, "Prunable weights per layer, for the mask comparison (LLaMA-7B)");

namespace fedprllm::secagg {
namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

struct Timings {
  double keys = 0, share = 0, receive = 0, mask = 0, unmask = 0;  // summed over sites
  double server_sum = 0;
  int64_t advertisement_bytes = 0, share_bytes = 0, masked_bytes = 0, unmask_bytes = 0;  // summed over sites
};

absl::StatusOr<Timings> RunOnce(const SessionConfig& config, const std::string& certs, const std::string& dropped) {
  Timings t;
  SecAggServer server(config);
  std::vector<SecAggSite> sites;
  for (const std::string& name : config.sites) {
    const auto start = Clock::now();
    ASSIGN_OR_RETURN(SecAggSite site, SecAggSite::Create(config, name, ReadFile(certs + "/" + name + ".key"),
                                                         ReadFile(certs + "/" + name + ".crt"), ReadFile(certs + "/ca.crt")));
    ASSIGN_OR_RETURN(KeyAdvertisement advertisement, site.Advertise());
    t.keys += Seconds(start);
    t.advertisement_bytes += advertisement.site.size() + 64 + advertisement.certificate_pem.size() +
                             advertisement.signature.size();
    RETURN_IF_ERROR(server.AddAdvertisement(advertisement));
    sites.push_back(std::move(site));
  }
  ASSIGN_OR_RETURN(const std::vector<KeyAdvertisement> advertisements, server.Advertisements());
  for (SecAggSite& site : sites) {
    const auto start = Clock::now();
    ASSIGN_OR_RETURN(std::vector<SealedShares> shares, site.ShareKeys(advertisements));
    t.share += Seconds(start);
    for (const SealedShares& s : shares) t.share_bytes += s.from.size() + s.to.size() + s.sealed.size();
    RETURN_IF_ERROR(server.AddShares(site.site(), std::move(shares)));
  }
  std::mt19937_64 random(1);
  for (SecAggSite& site : sites) {
    const auto start = Clock::now();
    RETURN_IF_ERROR(site.ReceiveShares(server.SharesFor(site.site())));
    t.receive += Seconds(start);
    if (site.site() == dropped) continue;
    std::vector<uint64_t> input(config.length);
    for (uint64_t& w : input) w = random() >> 24;
    const auto mask_start = Clock::now();
    ASSIGN_OR_RETURN(std::vector<uint64_t> masked, site.MaskInput(input));
    t.mask += Seconds(mask_start);
    t.masked_bytes += 8 * static_cast<int64_t>(masked.size());
    RETURN_IF_ERROR(server.AddMaskedInput(site.site(), std::move(masked)));
  }
  ASSIGN_OR_RETURN(const UnmaskRequest request, server.CloseInputs());
  for (SecAggSite& site : sites) {
    if (site.site() == dropped) continue;
    const auto start = Clock::now();
    ASSIGN_OR_RETURN(UnmaskResponse response, site.Unmask(request));
    t.unmask += Seconds(start);
    for (const auto* list : {&response.self_mask_shares, &response.mask_key_shares}) {
      for (const RevealedShare& r : *list) t.unmask_bytes += r.owner.size() + 1 + r.share.y.size();
    }
    RETURN_IF_ERROR(server.AddUnmaskResponse(std::move(response)));
  }
  const auto start = Clock::now();
  ASSIGN_OR_RETURN(std::vector<uint64_t> sum, server.Sum());
  t.server_sum = Seconds(start);
  return t;
}

absl::Status Run() {
  const int n = absl::GetFlag(FLAGS_sites);
  SessionConfig config;
  config.job_id = "bench";
  config.round = 0;
  for (int i = 0; i < n; ++i) config.sites.push_back(absl::StrCat("site-", i + 1));
  config.threshold = absl::GetFlag(FLAGS_threshold) > 0 ? absl::GetFlag(FLAGS_threshold) : n / 2 + 1;
  config.length = static_cast<size_t>(absl::GetFlag(FLAGS_words));
  RETURN_IF_ERROR(config.Validate());

  char tmpl[] = "/tmp/fedprllm-secagg-bench-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) return absl::InternalError("mkdtemp failed");
  const std::string certs = tmpl;
  std::string command = absl::StrCat("bash ", FEDPRLLM_SOURCE_DIR, "/deploy/make_certs.sh ", certs);
  for (const std::string& site : config.sites) absl::StrAppend(&command, " ", site);
  absl::StrAppend(&command, " > ", certs, "/make.log 2>&1");
  std::printf("making %d site certificates with deploy/make_certs.sh...\n", n);
  if (std::system(command.c_str()) != 0) return absl::InternalError("make_certs.sh failed; see " + certs + "/make.log");

  // The plain sum the secure one replaces: n vectors added word by word.
  std::vector<std::vector<uint64_t>> plain(n, std::vector<uint64_t>(config.length, 7));
  const auto plain_start = Clock::now();
  std::vector<uint64_t> plain_sum(config.length, 0);
  for (const auto& v : plain) {
    for (size_t i = 0; i < v.size(); ++i) plain_sum[i] += v[i];
  }
  const double plain_seconds = Seconds(plain_start);

  std::printf("secure sum of %zu words (%zu bytes per site in the clear), %d sites, threshold %d\n", config.length,
              8 * config.length, n, config.threshold);
  for (const std::string dropped : {std::string(), config.sites[n / 2]}) {
    ASSIGN_OR_RETURN(const Timings t, RunOnce(config, certs, dropped));
    const int senders = dropped.empty() ? n : n - 1;
    const double site_seconds = (t.keys + t.share + t.receive + t.mask + t.unmask) / n;
    const double site_bytes =
        static_cast<double>(t.advertisement_bytes + t.share_bytes + t.masked_bytes + t.unmask_bytes) / n;
    std::printf("\n%s\n", dropped.empty() ? "no drop-out" : absl::StrCat("one site (", dropped, ") dropped after the key exchange").c_str());
    std::printf("  per site: keys+signature %.2f ms, shares %.2f ms, opening shares %.2f ms, masking %.2f ms, "
                "unmask answer %.3f ms; total %.1f ms\n",
                1e3 * t.keys / n, 1e3 * t.share / n, 1e3 * t.receive / n, 1e3 * t.mask / senders,
                1e3 * t.unmask / senders, 1e3 * site_seconds);
    std::printf("  server unmasking and sum: %.1f ms (the plain sum of the same vectors: %.3f ms, ratio %.0fx)\n",
                1e3 * t.server_sum, 1e3 * plain_seconds, t.server_sum / plain_seconds);
    std::printf("  bytes per site: advertisement %.0f, shares %.0f, masked input %.0f, unmask answer %.0f; "
                "total %.0f = %.3fx the plain statistics (%zu)\n",
                static_cast<double>(t.advertisement_bytes) / n, static_cast<double>(t.share_bytes) / n,
                static_cast<double>(t.masked_bytes) / senders, static_cast<double>(t.unmask_bytes) / senders,
                site_bytes, site_bytes / (8.0 * config.length), 8 * config.length);
    const double mask_bytes = static_cast<double>(absl::GetFlag(FLAGS_mask_weights)) / 8;
    std::printf("  against the 1-bit masks of the same layer (%.0f bytes): %.4fx\n", mask_bytes, site_bytes / mask_bytes);
  }
  std::string cleanup = "rm -rf " + certs;
  return std::system(cleanup.c_str()) == 0 ? absl::OkStatus() : absl::InternalError("cannot remove " + certs);
}

}  // namespace
}  // namespace fedprllm::secagg

int main(int argc, char** argv) {
  fedprllm::ParseCommandLine(argc, argv, "fedprllm-bench-secagg [--sites 64] [--words 23300]");
  const absl::Status status = fedprllm::secagg::Run();
  if (!status.ok()) {
    std::fprintf(stderr, "fedprllm-bench-secagg: error: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
