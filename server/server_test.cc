// Unit tests of the server's pieces that need no network: config parsing and validation,
// allowlist matching, and the state directory's file formats.
#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/job_config.h"
#include "server/peer_identity.h"
#include "server/server_config.h"
#include "server/test_server_config.h"
#include "server/state_store.h"

namespace fedprllm {
namespace {

using ::testing::HasSubstr;

using testing::kMinimalServerYaml;

TEST(ServerConfigTest, DefaultsAndDerivedCounts) {
  auto c = ParseServerConfig(kMinimalServerYaml, "t.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->listen_address, "0.0.0.0:50051");
  EXPECT_FALSE(c->insecure);
  EXPECT_EQ(c->expected_clients, 3);
  EXPECT_EQ(c->min_clients, 3);
  EXPECT_EQ(c->max_chunk_bytes, 1 << 20);
  EXPECT_EQ(c->strategy, "one-shot");
  auto agg = c->Aggregation();
  ASSERT_TRUE(agg.ok());
  EXPECT_EQ(agg->group, ComparisonGroup::kLayer);
  EXPECT_EQ(agg->tie_break, TieBreak::kSmallerMagnitude);
}

TEST(ServerConfigTest, EveryBadValueNamesItsKey) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"sparsity: 1.0", "'sparsity'"},
      {"pattern: \"3:4x\"", "'pattern'"},
      {"pattern: \"1:8\"", "'pattern'"},
      {"group: diagonal", "'group'"},
      {"strategy: twice", "'strategy'"},
      {"strategy: exact\nweight_scaling: true", "'weight_scaling': the exact strategy pools statistics"},
      {"strategy: exact\noutlier_policy: exclude", "'outlier_policy': the exact strategy has no masks"},
      {"tie_break: coin", "'tie_break'"},
      {"expected_clients: 4", "'expected_clients'"},
      {"min_clients: 9", "'min_clients'"},
      {"round_deadline_seconds: 1", "'round_deadline_seconds'"},
      {"poll_window_seconds: 0", "'poll_window_seconds'"},
      {"max_chunk_bytes: 100", "'max_chunk_bytes'"},
      {"max_chunk_bytes: 99999999", "'max_chunk_bytes'"},
      {"listen_address: \"localhost\"", "'listen_address'"},
      {"sparsity: lots", "'sparsity'"},
      {"allowed_clients: [\"bad name\"]", "'allowed_clients'"},
      {"allowed_clients: [a, a]", "listed twice"},
      {"colour: blue", "unknown config key 'colour'"},
      {"tls: {cert: a, key: b, ca: c, pin: d}", "unknown config key 'tls.pin'"},
  };
  for (const auto& [line, expected] : cases) {
    auto c = ParseServerConfig(std::string(kMinimalServerYaml) + line + "\n", "t.yaml");
    EXPECT_FALSE(c.ok()) << line;
    EXPECT_THAT(c.status().message(), HasSubstr(expected)) << line;
  }
}

TEST(ServerConfigTest, TlsRequiredUnlessInsecure) {
  const std::string no_tls = "allowed_clients: [a]\nmodel: m\noutput_dir: o\nstate_dir: s\n";
  EXPECT_THAT(ParseServerConfig(no_tls, "t").status().message(), HasSubstr("'tls.cert': is required"));
  EXPECT_TRUE(ParseServerConfig(no_tls + "insecure: true\n", "t").ok());
  EXPECT_THAT(ParseServerConfig("a: [", "t").status().message(), HasSubstr("t:1"));
}

TEST(PeerIdentityTest, FirstAllowlistedNameWins) {
  const std::set<std::string> allow = {"site-a", "site-b"};
  EXPECT_EQ(MatchAllowlist({"site-b", "site-a"}, allow), "site-b");
  EXPECT_EQ(MatchAllowlist({"mallory", "site-a"}, allow), "site-a");  // SAN after CN
  EXPECT_EQ(MatchAllowlist({"mallory"}, allow), std::nullopt);
  EXPECT_EQ(MatchAllowlist({}, allow), std::nullopt);
  EXPECT_EQ(DescribeNames({"x", "y"}), "certificate names [x, y]");
  EXPECT_FALSE(ValidIdentity("-lead"));
  EXPECT_FALSE(ValidIdentity(std::string(65, 'a')));
  EXPECT_TRUE(ValidIdentity("hospital-7.eu_west"));
}

TEST(StateStoreTest, MaskSetRoundTripsAndDetectsCorruption) {
  std::map<std::string, PackedMask> masks;
  PackedMask a({3, 5});
  a.Set(0, true);
  a.Set(14, true);
  masks.emplace("a", a);
  masks.emplace("b", PackedMask({8}));
  const std::string bytes = EncodeMaskSet(masks);
  auto back = DecodeMaskSet(bytes, "f");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, masks);
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string bad = bytes;
    bad[i] ^= 0x01;
    EXPECT_FALSE(DecodeMaskSet(bad, "f").ok()) << "flip at byte " << i;
  }
  EXPECT_EQ(DecodeMaskSet(bytes.substr(0, bytes.size() - 1), "f").status().code(), absl::StatusCode::kDataLoss);
}

TEST(StateStoreTest, MaskSetFileReadsOneMaskAtATimeAndChecksTheFile) {
  std::map<std::string, PackedMask> masks;
  PackedMask a({3, 5});
  a.Set(2, true);
  a.Set(13, true);
  masks.emplace("a", a);
  PackedMask b({9});
  b.Set(8, true);
  masks.emplace("b", b);
  const std::string bytes = EncodeMaskSet(masks);
  const std::string path = ::testing::TempDir() + "/mask_set_file_test.bin";
  ASSERT_TRUE(AtomicWriteFile(path, bytes).ok());
  auto file = MaskSetFile::Open(path, Sha256Hex(bytes));
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ((*file)->tensors().size(), 2u);
  EXPECT_EQ((*file)->tensors()[0], (std::pair<std::string, std::vector<int64_t>>{"a", {3, 5}}));
  EXPECT_EQ(*(*file)->Mask("a"), a);
  EXPECT_EQ(*(*file)->Mask("b"), b);
  EXPECT_EQ((*file)->Mask("c").status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(MaskSetFile::Open(path, std::string(64, '0')).status().message()),
              HasSubstr("SHA-256 differs"));
  std::string bad = bytes;
  bad[bytes.size() / 2] ^= 0x10;
  ASSERT_TRUE(AtomicWriteFile(path, bad).ok());
  EXPECT_EQ(MaskSetFile::Open(path).status().code(), absl::StatusCode::kDataLoss);
  std::filesystem::remove(path);
  EXPECT_FALSE(MaskSetFile::Open(path).ok());
}

// The streaming writer produces the bytes EncodeMaskSet does (entries in the order added),
// publishes only on Commit, and refuses a count other than the one it was created for.
TEST(StateStoreTest, MaskSetWriterStreamsTheSameFile) {
  std::map<std::string, PackedMask> masks;
  PackedMask a({3, 5});
  a.Set(7, true);
  masks.emplace("a", a);
  masks.emplace("b", PackedMask({9}));
  const std::string path = ::testing::TempDir() + "/mask_set_writer_test.bin";
  std::filesystem::remove(path);
  {
    auto writer = MaskSetWriter::Create(path, 2);
    ASSERT_TRUE(writer.ok()) << writer.status();
    ASSERT_TRUE(writer->Add("a", a).ok());
    EXPECT_EQ(writer->Commit().status().code(), absl::StatusCode::kFailedPrecondition);
  }
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp")) << "an abandoned writer leaves nothing";
  auto writer = MaskSetWriter::Create(path, 2);
  ASSERT_TRUE(writer.ok()) << writer.status();
  for (const auto& [name, mask] : masks) ASSERT_TRUE(writer->Add(name, mask).ok());
  EXPECT_FALSE(writer->Add("c", a).ok());
  auto sha = writer->Commit();
  ASSERT_TRUE(sha.ok()) << sha.status();
  std::ifstream in(path, std::ios::binary);
  const std::string written((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(written, EncodeMaskSet(masks));
  EXPECT_EQ(*sha, Sha256Hex(written));
  EXPECT_TRUE(MaskSetFile::Open(path, *sha).ok());
  std::filesystem::remove(path);
}

TEST(Sha256Test, IncrementalEqualsOneShot) {
  const std::string text = "the quick brown fox jumps over the lazy dog, twice over";
  Sha256 sha;
  sha.Update(text.substr(0, 7));
  sha.Update("");
  sha.Update(text.substr(7));
  EXPECT_EQ(sha.FinishHex(), Sha256Hex(text));
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

void WriteFileForTest(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

TEST(StateStoreTest, AtomicWritesReopenAndCleanUp) {
  const std::string dir = ::testing::TempDir() + "/state_store_test";
  std::filesystem::remove_all(dir);
  auto store = StateStore::Open(dir, "job-1");
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_FALSE(store->has_state());
  ASSERT_TRUE(store->WriteJson("job.json", {{"state", "RUNNING"}}).ok());
  ASSERT_TRUE(store->WriteBytes(StateStore::UploadFile(0, "site-a"), "xyz").ok());
  ASSERT_TRUE(store->WriteBytes(StateStore::UploadFile(0, "site-b"), "abc").ok());
  EXPECT_TRUE(std::filesystem::exists(dir + "/job-1/rounds/0/uploads/site-a.masks"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/job-1/job.json.tmp"));
  // Reopened: the state is found and read back; leftovers of interrupted writes go away.
  auto again = StateStore::Open(dir, "job-1");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->has_state());
  EXPECT_EQ((*again->ReadJson("job.json"))["state"], "RUNNING");
  EXPECT_EQ(*again->ReadBytes(StateStore::UploadFile(0, "site-b")), "abc");
  WriteFileForTest(dir + "/job-1/rounds/0/round.json.tmp", "{");
  EXPECT_EQ(again->RemoveTempFiles(), 1);
  EXPECT_EQ(again->RemoveOrphanUploads(0, {"site-a"}), std::vector<std::string>{"site-b"});
  EXPECT_TRUE(again->Exists(StateStore::UploadFile(0, "site-a")));
  EXPECT_FALSE(again->Exists(StateStore::UploadFile(0, "site-b")));
  WriteFileForTest(dir + "/job-1/bad.json", "not json");
  EXPECT_EQ(again->ReadJson("bad.json").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(again->ReadJson("missing.json").status().code(), absl::StatusCode::kNotFound);
  std::filesystem::remove_all(dir);
}

TEST(StateStoreTest, HookFailureStopsTheWrite) {
  const std::string dir = ::testing::TempDir() + "/state_store_hook_test";
  std::filesystem::remove_all(dir);
  std::vector<std::string> seen;
  auto store = StateStore::Open(dir, "job-1", [&](const std::string& relative) {
    seen.push_back(relative);
    return seen.size() > 1 ? absl::InternalError("simulated crash") : absl::OkStatus();
  });
  ASSERT_TRUE(store.ok());
  EXPECT_TRUE(store->WriteJson("job.json", {{"state", "RUNNING"}}).ok());
  EXPECT_EQ(store->WriteJson("rounds/0/round.json", {{"round", 0}}).code(), absl::StatusCode::kInternal);
  EXPECT_FALSE(store->Exists("rounds/0/round.json"));
  EXPECT_EQ(seen, (std::vector<std::string>{"job.json", "rounds/0/round.json"}));
  std::filesystem::remove_all(dir);
}

TEST(ServerConfigTest, TheExampleFilesParse) {
  absl::StatusOr<ServerConfig> server = LoadServerConfig(std::string(FEDPRLLM_SOURCE_DIR) + "/deploy/server.example.yaml");
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_EQ(server->admins, std::vector<std::string>{"operator"});
  EXPECT_EQ(server->model_name, "stories260K");
  std::ifstream in(std::string(FEDPRLLM_SOURCE_DIR) + "/deploy/job.example.yaml");
  const std::string job_yaml((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  absl::StatusOr<JobDefinition> job = ParseJobYaml(job_yaml, "deploy/job.example.yaml", *server);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->name, "nightly");
  EXPECT_EQ(job->config.allowed_clients, server->allowed_clients);  // sites: [] = all of them
}

// Every key of the server config appears in deploy/server.example.yaml, and every job key in
// deploy/job.example.yaml, as "key:" at the start of a line (nested keys by their last part).
TEST(ServerConfigTest, TheExampleFilesListEveryKey) {
  auto read = [](const std::string& name) {
    std::ifstream in(std::string(FEDPRLLM_SOURCE_DIR) + "/deploy/" + name);
    return "\n" + std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  const std::string server = read("server.example.yaml"), job = read("job.example.yaml");
  for (const std::string& key : ServerConfigKeys()) {
    const std::string leaf = key.substr(key.rfind('.') == std::string::npos ? 0 : key.rfind('.') + 1);
    EXPECT_TRUE(server.find("\n" + key + ":") != std::string::npos || server.find(" " + leaf + ":") != std::string::npos)
        << key << " is not in deploy/server.example.yaml";
  }
  ServerConfig scratch;
  for (const auto& [key, setter] : PruningJobSetters(&scratch)) {
    EXPECT_NE(job.find("\n" + key + ":"), std::string::npos) << key << " is not in deploy/job.example.yaml";
  }
}

TEST(ServerConfigTest, RobustnessKeys) {
  const std::string base = "allowed_clients: [a, b, c]\ninsecure: true\nmodel: m\noutput_dir: o\nstate_dir: s\n";
  auto parsed = ParseServerConfig(base, "t.yaml");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->site_group, "row");
  EXPECT_EQ(parsed->outlier_policy, "report");
  EXPECT_DOUBLE_EQ(parsed->outlier_z_threshold, 3.5);
  EXPECT_DOUBLE_EQ(parsed->outlier_min_gap, 0.05);
  EXPECT_EQ(parsed->outlier_min_sites, 3);
  auto exclude = ParseServerConfig(base + "outlier_policy: exclude\nsite_group: layer\n", "t.yaml");
  ASSERT_TRUE(exclude.ok()) << exclude.status();
  EXPECT_EQ(exclude->Outliers()->policy, OutlierPolicy::kExclude);
  for (const auto& [line, key] : std::vector<std::pair<std::string, std::string>>{
           {"site_group: column", "'site_group'"},
           {"outlier_policy: drop", "'outlier_policy'"},
           {"outlier_z_threshold: 0.5", "'outlier_z_threshold'"},
           {"outlier_min_gap: 1.5", "'outlier_min_gap'"},
           {"outlier_min_sites: 2", "'outlier_min_sites'"}}) {
    auto bad = ParseServerConfig(base + line + "\n", "t.yaml");
    ASSERT_FALSE(bad.ok()) << line;
    EXPECT_NE(std::string(bad.status().message()).find(key), std::string::npos) << bad.status();
  }
}

}  // namespace
}  // namespace fedprllm
