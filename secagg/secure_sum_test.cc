// Tests of the secure sum: exactness, recovery after a drop-out, the threshold, forged key
// advertisements, and that the server's view of one site looks uniform.
#include "secagg/secure_sum.h"
#include "secagg/vote_packing.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "secagg/fixed_point.h"
#include "secagg/shamir.h"

namespace fedprllm::secagg {
namespace {

using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// A federation CA with site-1..site-5, and a rogue CA with mallory (deploy/make_certs.sh).
class Certs {
 public:
  static const Certs& Get() {
    static const Certs certs;
    return certs;
  }
  std::string Key(const std::string& site) const { return ReadFile(dir_ + "/" + site + ".key"); }
  std::string Cert(const std::string& site) const { return ReadFile(dir_ + "/" + site + ".crt"); }
  std::string Ca() const { return ReadFile(dir_ + "/ca.crt"); }
  std::string RogueKey() const { return ReadFile(dir_ + "/rogue/mallory.key"); }
  std::string RogueCert() const { return ReadFile(dir_ + "/rogue/mallory.crt"); }
  bool ok() const { return ok_; }
  ~Certs() {
    if (!dir_.empty() && !::testing::UnitTest::GetInstance()->Failed()) std::filesystem::remove_all(dir_);
  }

 private:
  Certs() {
    char tmpl[] = "/tmp/fedprllm-secagg-test-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) return;
    dir_ = tmpl;
    const std::string command = absl::StrCat("bash ", FEDPRLLM_SOURCE_DIR, "/deploy/make_certs.sh ", dir_,
                                             " --rogue mallory site-1 site-2 site-3 site-4 site-5 > ", dir_,
                                             "/make.log 2>&1");
    ok_ = std::system(command.c_str()) == 0;
  }
  std::string dir_;
  bool ok_ = false;
};

const std::vector<std::string> kSites = {"site-1", "site-2", "site-3", "site-4", "site-5"};

SessionConfig Config(int threshold, size_t length) {
  SessionConfig config;
  config.job_id = "job-7";
  config.round = 3;
  config.sites = kSites;
  config.threshold = threshold;
  config.length = length;
  return config;
}

std::vector<uint64_t> RandomWords(size_t length, uint64_t seed) {
  std::mt19937_64 random(seed);
  std::vector<uint64_t> out(length);
  for (uint64_t& w : out) w = random();
  return out;
}

// Runs steps 1-3 for every site; sites in `drop_after_sharing` share keys and then never
// send their masked input. Returns the server ready for step 4 (inputs not closed).
struct Aggregation {
  std::vector<SecAggSite> sites;
  std::unique_ptr<SecAggServer> server;
  std::map<std::string, std::vector<uint64_t>> masked;  // what the server received
};

Aggregation RunUntilInputs(const SessionConfig& config, const std::map<std::string, std::vector<uint64_t>>& inputs,
                   const std::set<std::string>& drop_after_sharing) {
  const Certs& certs = Certs::Get();
  Aggregation run;
  run.server = std::make_unique<SecAggServer>(config);
  for (const std::string& site : config.sites) {
    auto created = SecAggSite::Create(config, site, certs.Key(site), certs.Cert(site), certs.Ca());
    EXPECT_TRUE(created.ok()) << created.status();
    run.sites.push_back(*std::move(created));
    auto advertisement = run.sites.back().Advertise();
    EXPECT_TRUE(advertisement.ok()) << advertisement.status();
    EXPECT_TRUE(run.server->AddAdvertisement(*advertisement).ok());
  }
  auto advertisements = run.server->Advertisements();
  EXPECT_TRUE(advertisements.ok()) << advertisements.status();
  for (SecAggSite& site : run.sites) {
    auto shares = site.ShareKeys(*advertisements);
    EXPECT_TRUE(shares.ok()) << shares.status();
    EXPECT_TRUE(run.server->AddShares(site.site(), *std::move(shares)).ok());
  }
  for (SecAggSite& site : run.sites) {
    const absl::Status received = site.ReceiveShares(run.server->SharesFor(site.site()));
    EXPECT_TRUE(received.ok()) << received;
  }
  for (SecAggSite& site : run.sites) {
    if (drop_after_sharing.count(site.site()) != 0) continue;
    auto masked = site.MaskInput(inputs.at(site.site()));
    EXPECT_TRUE(masked.ok()) << masked.status();
    run.masked[site.site()] = *masked;
    EXPECT_TRUE(run.server->AddMaskedInput(site.site(), *std::move(masked)).ok());
  }
  return run;
}

// Step 4 with the first `answers` survivors answering; returns the server's sum.
absl::StatusOr<std::vector<uint64_t>> Unmask(Aggregation& run, int answers) {
  absl::StatusOr<UnmaskRequest> request = run.server->CloseInputs();
  if (!request.ok()) return request.status();
  int answered = 0;
  for (SecAggSite& site : run.sites) {
    const auto& survivors = request->survivors;
    if (answered == answers || std::find(survivors.begin(), survivors.end(), site.site()) == survivors.end()) continue;
    absl::StatusOr<UnmaskResponse> response = site.Unmask(*request);
    if (!response.ok()) return response.status();
    if (absl::Status added = run.server->AddUnmaskResponse(*std::move(response)); !added.ok()) return added;
    ++answered;
  }
  return run.server->Sum();
}

std::map<std::string, std::vector<uint64_t>> Inputs(size_t length) {
  std::map<std::string, std::vector<uint64_t>> inputs;
  for (size_t i = 0; i < kSites.size(); ++i) inputs[kSites[i]] = RandomWords(length, 100 + i);
  return inputs;
}

std::vector<uint64_t> PlainSum(const std::map<std::string, std::vector<uint64_t>>& inputs,
                               const std::set<std::string>& without, size_t length) {
  std::vector<uint64_t> sum(length, 0);
  for (const auto& [site, x] : inputs) {
    if (without.count(site) != 0) continue;
    for (size_t i = 0; i < length; ++i) sum[i] += x[i];
  }
  return sum;
}

TEST(SecAggTest, MaskedSumEqualsThePlainSumExactly) {
  ASSERT_TRUE(Certs::Get().ok());
  const size_t length = 3000;
  const auto inputs = Inputs(length);
  Aggregation run = RunUntilInputs(Config(3, length), inputs, {});
  for (const auto& [site, masked] : run.masked) EXPECT_NE(masked, inputs.at(site)) << site;
  absl::StatusOr<std::vector<uint64_t>> sum = Unmask(run, 3);
  ASSERT_TRUE(sum.ok()) << sum.status();
  EXPECT_EQ(*sum, PlainSum(inputs, {}, length));
}

TEST(SecAggTest, FixedPointSumThroughSecureAggregationEqualsThePlainFixedPointSum) {
  ASSERT_TRUE(Certs::Get().ok());
  const size_t length = 500;
  std::mt19937_64 random(5);
  std::uniform_real_distribution<double> value(0.0, 1e6);
  FixedPointCode code;
  std::map<std::string, std::vector<uint64_t>> inputs;
  std::vector<double> plain(length, 0.0);
  for (const std::string& site : kSites) {
    std::vector<double> x(length);
    for (double& v : x) v = value(random);
    auto encoded = EncodeFixedPoint(x, code);
    ASSERT_TRUE(encoded.ok()) << encoded.status();
    inputs[site] = *encoded;
  }
  auto plain_decoded = DecodeFixedPointSum(PlainSum(inputs, {}, length), 5, true, code);
  ASSERT_TRUE(plain_decoded.ok());
  Aggregation run = RunUntilInputs(Config(3, length), inputs, {});
  auto sum = Unmask(run, 5);
  ASSERT_TRUE(sum.ok()) << sum.status();
  auto decoded = DecodeFixedPointSum(*sum, 5, true, code);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, *plain_decoded);
}

TEST(SecAggTest, OneSiteDroppedAfterTheKeyExchangeLeavesTheSurvivorsSum) {
  ASSERT_TRUE(Certs::Get().ok());
  const size_t length = 2000;
  const auto inputs = Inputs(length);
  Aggregation run = RunUntilInputs(Config(3, length), inputs, {"site-3"});
  absl::StatusOr<std::vector<uint64_t>> sum = Unmask(run, 4);
  ASSERT_TRUE(sum.ok()) << sum.status();
  EXPECT_EQ(*sum, PlainSum(inputs, {"site-3"}, length));
  EXPECT_EQ(run.server->survivors(), (std::vector<std::string>{"site-1", "site-2", "site-4", "site-5"}));
}

TEST(SecAggTest, TwoDroppedSitesAreRecoveredWithExactlyThresholdAnswers) {
  ASSERT_TRUE(Certs::Get().ok());
  const size_t length = 700;
  const auto inputs = Inputs(length);
  Aggregation run = RunUntilInputs(Config(3, length), inputs, {"site-1", "site-5"});
  absl::StatusOr<std::vector<uint64_t>> sum = Unmask(run, 3);
  ASSERT_TRUE(sum.ok()) << sum.status();
  EXPECT_EQ(*sum, PlainSum(inputs, {"site-1", "site-5"}, length));
}

TEST(SecAggTest, RecoveryBelowTheThresholdFailsWithAClearError) {
  ASSERT_TRUE(Certs::Get().ok());
  const size_t length = 100;
  const auto inputs = Inputs(length);
  {  // 4 survivors, threshold 4, only 3 answer.
    Aggregation run = RunUntilInputs(Config(4, length), inputs, {"site-2"});
    absl::StatusOr<std::vector<uint64_t>> sum = Unmask(run, 3);
    ASSERT_FALSE(sum.ok());
    EXPECT_EQ(sum.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(sum.status().message(),
              "unmasking has 3 answers of the 4 survivors and needs 4 (the threshold); the sum cannot be recovered");
  }
  {  // Only 2 masked inputs arrive for a threshold of 3: the server refuses to close.
    Aggregation run = RunUntilInputs(Config(3, length), inputs, {"site-1", "site-2", "site-3"});
    absl::StatusOr<std::vector<uint64_t>> sum = Unmask(run, 2);
    ASSERT_FALSE(sum.ok());
    EXPECT_EQ(sum.status().message(), "2 sites sent masked inputs; 3 are needed");
  }
  {  // Shamir itself: threshold - 1 shares do not recover.
    const std::vector<uint8_t> secret(32, 7);
    auto shares = ShamirSplit(secret, 5, 3);
    ASSERT_TRUE(shares.ok());
    auto two = ShamirCombine(absl::MakeSpan(*shares).subspan(0, 2), 3);
    EXPECT_EQ(two.status().message(), "Shamir recovery has 2 shares and needs 3");
  }
}

TEST(SecAggTest, ASitesNameIsItsCertificatesCommonName) {
  ASSERT_TRUE(Certs::Get().ok());
  auto name = CertificateCommonName(Certs::Get().Cert("site-2"));
  ASSERT_TRUE(name.ok()) << name.status();
  EXPECT_EQ(*name, "site-2");
  EXPECT_FALSE(CertificateCommonName("not a certificate").ok());
}

TEST(SecAggTest, AForgedKeyAdvertisementIsRefused) {
  const Certs& certs = Certs::Get();
  ASSERT_TRUE(certs.ok());
  const SessionConfig config = Config(3, 10);
  std::vector<SecAggSite> sites;
  std::vector<KeyAdvertisement> advertisements;
  for (const std::string& site : kSites) {
    auto created = SecAggSite::Create(config, site, certs.Key(site), certs.Cert(site), certs.Ca());
    ASSERT_TRUE(created.ok()) << created.status();
    sites.push_back(*std::move(created));
    auto advertisement = sites.back().Advertise();
    ASSERT_TRUE(advertisement.ok()) << advertisement.status();
    advertisements.push_back(*advertisement);
  }
  const auto share_with = [&](std::vector<KeyAdvertisement> relayed) {
    auto receiver = SecAggSite::Create(config, "site-1", certs.Key("site-1"), certs.Cert("site-1"), certs.Ca());
    relayed[0] = receiver->Advertise().value();
    return receiver->ShareKeys(relayed).status();
  };
  EXPECT_TRUE(share_with(advertisements).ok());
  {  // The server puts its own mask key in site-2's place: the signature no longer covers it.
    std::vector<KeyAdvertisement> relayed = advertisements;
    relayed[1].mask_public_key = GenerateX25519KeyPair()->public_key;
    const absl::Status s = share_with(relayed);
    EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
    EXPECT_EQ(s.message(), "the key advertisement of site 'site-2' is refused: its signature does not verify with "
                           "its certificate's key");
  }
  {  // A key signed by a certificate of another CA, claiming to be site-2.
    std::vector<KeyAdvertisement> relayed = advertisements;
    relayed[1].certificate_pem = certs.RogueCert();
    relayed[1].signature = SignMessage(certs.RogueKey(), AdvertisementMessage(config, relayed[1])).value();
    const absl::Status s = share_with(relayed);
    EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
    EXPECT_THAT(s.message(), HasSubstr("site 'site-2' is refused: its certificate does not chain to the federation CA"));
  }
  {  // site-3's genuine certificate and key, advertising as site-2.
    std::vector<KeyAdvertisement> relayed = advertisements;
    relayed[1].certificate_pem = certs.Cert("site-3");
    relayed[1].signature = SignMessage(certs.Key("site-3"), AdvertisementMessage(config, relayed[1])).value();
    const absl::Status s = share_with(relayed);
    EXPECT_EQ(s.message(), "the key advertisement of site 'site-2' is refused: its certificate is for 'site-3'");
  }
}

// Chi-square statistic of the byte histogram of `words` (255 degrees of freedom).
double ByteChiSquare(const std::vector<uint64_t>& words) {
  std::vector<double> counts(256, 0.0);
  for (uint64_t w : words) {
    for (int b = 0; b < 8; ++b) counts[(w >> (8 * b)) & 0xff] += 1;
  }
  const double expected = words.size() * 8.0 / 256.0;
  double chi = 0;
  for (double c : counts) chi += (c - expected) * (c - expected) / expected;
  return chi;
}

TEST(SecAggTest, WhatTheServerReceivesLooksUniform) {
  ASSERT_TRUE(Certs::Get().ok());
  const size_t length = 8192;  // 65,536 bytes, 256 expected per byte value
  FixedPointCode code;
  std::map<std::string, std::vector<uint64_t>> inputs;
  for (size_t i = 0; i < kSites.size(); ++i) {
    std::vector<double> x(length);
    for (size_t j = 0; j < length; ++j) x[j] = 1.0 + 0.001 * static_cast<double>(j % 97) + static_cast<double>(i);
    inputs[kSites[i]] = EncodeFixedPoint(x, code).value();
  }
  Aggregation run = RunUntilInputs(Config(3, length), inputs, {});
  // 255 degrees of freedom: mean 255, sd 22.6; 400 is beyond p = 1e-9.
  const double plain = ByteChiSquare(inputs.at("site-2"));
  const double masked = ByteChiSquare(run.masked.at("site-2"));
  EXPECT_GT(plain, 10000.0);
  EXPECT_LT(masked, 400.0);
}

TEST(SecAggTest, ASiteRefusesAnUnmaskRequestThatWouldRevealBothSecrets) {
  ASSERT_TRUE(Certs::Get().ok());
  const size_t length = 16;
  Aggregation run = RunUntilInputs(Config(3, length), Inputs(length), {});
  UnmaskRequest request{{"site-1", "site-2", "site-3"}, {"site-3"}};
  EXPECT_EQ(run.sites[0].Unmask(request).status().message(),
            "the unmask request names 'site-3' both as a survivor and as dropped");
  request = UnmaskRequest{{"site-1", "site-2"}, {}};
  EXPECT_EQ(run.sites[0].Unmask(request).status().message(), "the unmask request names 2 survivors; the threshold is 3");
  request = UnmaskRequest{{"site-1", "site-2", "site-4"}, {"site-3", "site-5"}};
  EXPECT_TRUE(run.sites[0].Unmask(request).ok());
  request = UnmaskRequest{{"site-1", "site-2", "site-3"}, {"site-4", "site-5"}};  // a second, different request
  EXPECT_EQ(run.sites[0].Unmask(request).status().message(), "this site has already answered an unmask request");
}

// Vote counts through the secure sum: the counts the server unpacks equal the plain count of
// each weight's prune bits, at ceil(log2(C + 1)) bits per weight.
TEST(SecAggTest, SecureVoteCountsEqualThePlainCounts) {
  ASSERT_TRUE(Certs::Get().ok());
  const int64_t weights = 4099;  // not a multiple of the fields per word
  const int bits = VoteFieldBits(static_cast<int>(kSites.size()));
  EXPECT_EQ(bits, 3);
  EXPECT_EQ(VoteFieldBits(3), 2);
  EXPECT_EQ(VoteFieldBits(64), 7);
  EXPECT_EQ(VoteFieldBits(255), 8);
  std::mt19937_64 random(5);
  std::map<std::string, std::vector<uint64_t>> inputs;
  std::vector<int> plain(weights, 0);
  for (const std::string& site : kSites) {
    PackedMask mask({weights});
    for (int64_t i = 0; i < weights; ++i) {
      const bool pruned = random() % 2 == 0;
      mask.Set(i, pruned);
      plain[i] += pruned;
    }
    inputs[site] = PackVotes(mask, bits);
  }
  const size_t length = PackedVoteWords(weights, bits);
  EXPECT_EQ(length, static_cast<size_t>((weights + 20) / 21));
  Aggregation run = RunUntilInputs(Config(3, length), inputs, {});
  auto sum = Unmask(run, 5);
  ASSERT_TRUE(sum.ok()) << sum.status();
  auto counts = UnpackVoteCounts(*sum, bits, weights);
  ASSERT_TRUE(counts.ok()) << counts.status();
  for (int64_t i = 0; i < weights; ++i) ASSERT_EQ((*counts)[i], plain[i]) << i;
  EXPECT_FALSE(UnpackVoteCounts(absl::MakeConstSpan(*sum).subspan(1), bits, weights).ok());
  std::vector<uint64_t> stray = *sum;
  stray.back() |= uint64_t{1} << 63;
  EXPECT_THAT(UnpackVoteCounts(stray, bits, weights).status().message(), HasSubstr("beyond its last field"));
}

TEST(ShamirTest, AnyThresholdSubsetRecoversAndATamperedShareDoesNot) {
  std::vector<uint8_t> secret(32);
  for (size_t i = 0; i < secret.size(); ++i) secret[i] = static_cast<uint8_t>(i * 37 + 1);
  auto shares = ShamirSplit(secret, 7, 4);
  ASSERT_TRUE(shares.ok());
  for (int a = 0; a < 7; ++a) {
    for (int b = a + 1; b < 7; ++b) {
      std::vector<ShamirShare> subset;
      for (int i = 0; i < 7; ++i) {
        if (i != a && i != b && subset.size() < 4) subset.push_back((*shares)[i]);
      }
      auto recovered = ShamirCombine(subset, 4);
      ASSERT_TRUE(recovered.ok());
      EXPECT_EQ(*recovered, secret) << a << "," << b;
    }
  }
  std::vector<ShamirShare> tampered(shares->begin(), shares->begin() + 4);
  tampered[2].y[5] ^= 1;
  EXPECT_NE(ShamirCombine(tampered, 4).value(), secret);
  EXPECT_FALSE(ShamirSplit(secret, 5, 1).ok());
  EXPECT_FALSE(ShamirSplit(secret, 256, 3).ok());
}

TEST(FixedPointTest, OverflowIsRefusedAtTheSiteAndInTheSum) {
  FixedPointCode code;
  const double too_big = std::ldexp(static_cast<double>(code.Bound()), -code.fraction_bits) * 1.01;
  auto encoded = EncodeFixedPoint({1.0, too_big}, code);
  ASSERT_FALSE(encoded.ok());
  EXPECT_THAT(encoded.status().message(), HasSubstr("entry 1 ("));
  auto ok = EncodeFixedPoint({1.5, -2.25}, code);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(DecodeFixedPointSum(*ok, 1, false, code).value(), (std::vector<double>{1.5, -2.25}));
  EXPECT_EQ(DecodeFixedPointSum(*ok, 1, true, code).status().code(), absl::StatusCode::kOutOfRange);
  const std::vector<uint64_t> wrapped = {uint64_t{1} << 63};
  EXPECT_THAT(DecodeFixedPointSum(wrapped, 3, false, code).status().message(),
              HasSubstr("overflowed the fixed-point code"));
}

}  // namespace
}  // namespace fedprllm::secagg
