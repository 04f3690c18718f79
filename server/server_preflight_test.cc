// `fedprllm-server check` (RunServerPreflight) with real certificates and the bundled
// stories260K model: a good config passes every check; a key of another certificate, a
// client certificate used as the server's, a missing model, a state_dir that cannot be
// created, an output_dir that is a file and a listen address in use each fail on their own
// line with the problem in words, and the other checks still pass.
#include "server/server_preflight.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/llama_model.h"
#include "model/test_paths.h"
#include "tls/test_certs.h"

namespace fedprllm {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::TestCerts;

::testing::Environment* const kMakeCertificatesFirst =
    ::testing::AddGlobalTestEnvironment(new testing::MakeCertificatesFirst);

// A TCP socket on 127.0.0.1 with a free port, listening while it lives if `listen`.
class LoopbackPort {
 public:
  explicit LoopbackPort(bool listen) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    if (listen) {
      ::listen(fd_, 4);
    } else {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~LoopbackPort() {
    if (fd_ >= 0) ::close(fd_);
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  int fd_ = -1;
  int port_ = 0;
};

class ServerPreflightTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fedprllm-server-preflight-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    std::filesystem::create_directory(dir_ + "/jobs");
    std::ofstream(dir_ + "/a-file") << "not a directory\n";
    absl::StatusOr<LlamaModel> model = LlamaModel::Load(testing::BundledModel());
    ASSERT_TRUE(model.ok()) << model.status();
    fingerprint_ = model->Fingerprint();
  }
  void TearDown() override {
    if (!dir_.empty() && !HasFailure()) std::filesystem::remove_all(dir_);
  }

  // A valid config on a free port; `overrides` replace keys ("" drops one).
  std::string Config(const std::map<std::string, std::string>& overrides = {}) {
    std::map<std::string, std::string> keys = {
        {"listen_address", "\"" + LoopbackPort(false).address() + "\""},
        {"tls", Tls("server.crt", "server.key")},
        {"allowed_clients", "[site-a, site-b]"},
        {"model", testing::BundledModel()},
        {"state_dir", dir_ + "/run/state"},
        {"output_dir", dir_ + "/run/out"},
        {"jobs_dir", dir_ + "/jobs"},
    };
    for (const auto& [key, value] : overrides) keys[key] = value;
    std::string yaml;
    for (const auto& [key, value] : keys) {
      if (!value.empty()) yaml += key + ": " + value + "\n";
    }
    const std::string path = dir_ + "/server-" + std::to_string(++configs_) + ".yaml";
    std::ofstream(path) << yaml;
    return path;
  }
  static std::string Tls(const std::string& cert, const std::string& key) {
    const TestCerts& c = TestCerts::Get();
    return "{cert: " + c.Path(cert) + ", key: " + c.Path(key) + ", ca: " + c.Path("ca.crt") + "}";
  }

  static CheckReport Check(const std::string& path) {
    CheckReport report;
    RunServerPreflight(path, {}, &report);
    return report;
  }
  static CheckLine Line(const CheckReport& report, const std::string& name) {
    const CheckLine* line = report.Find(name);
    EXPECT_NE(line, nullptr) << "no line '" << name << "' in:\n" << report.ToString();
    return line != nullptr ? *line : CheckLine{CheckResult::kSkip, name, "(missing)"};
  }
  static void ExpectOthersOk(const CheckReport& report, const std::set<std::string>& except) {
    for (const CheckLine& line : report.lines()) {
      if (except.count(line.name) == 0) EXPECT_EQ(line.result, CheckResult::kOk) << CheckReport::Format(line);
    }
  }

  std::string dir_;
  std::string fingerprint_;
  int configs_ = 0;
};

TEST_F(ServerPreflightTest, GoodConfigPassesEveryCheck) {
  const std::string path = Config();
  const CheckReport report = Check(path);
  EXPECT_TRUE(report.passed()) << report.ToString();
  std::vector<std::string> names;
  for (const CheckLine& line : report.lines()) names.push_back(line.name);
  EXPECT_THAT(names, ElementsAre("config", "certificate", "listen", "state_dir", "output_dir", "jobs_dir", "model"))
      << report.ToString();
  ExpectOthersOk(report, {});
  EXPECT_THAT(Line(report, "config").text, AllOf(HasSubstr(path), HasSubstr("2 allowed clients")));
  EXPECT_THAT(Line(report, "certificate").text,
              AllOf(HasSubstr("server.crt (CN=localhost, names [localhost, 127.0.0.1]"),
                    HasSubstr("as a TLS server certificate")));
  EXPECT_THAT(Line(report, "listen").text, HasSubstr("can be bound"));
  EXPECT_THAT(Line(report, "state_dir").text, HasSubstr("will be created in " + dir_));
  EXPECT_THAT(Line(report, "jobs_dir").text, HasSubstr("exists, writable"));
  EXPECT_THAT(Line(report, "model").text,
              AllOf(HasSubstr("(stories260K): 5 layers"), HasSubstr("fingerprint " + fingerprint_)));
  // Nothing was created.
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/run"));
}

TEST_F(ServerPreflightTest, KeyOfAnotherCertificate) {
  const CheckReport report = Check(Config({{"tls", Tls("server.crt", "site-a.key")}}));
  EXPECT_FALSE(report.passed());
  EXPECT_EQ(Line(report, "certificate").result, CheckResult::kFail);
  EXPECT_THAT(Line(report, "certificate").text,
              AllOf(HasSubstr("site-a.key"), HasSubstr("is not the private key of the certificate in")));
  ExpectOthersOk(report, {"certificate"});
}

TEST_F(ServerPreflightTest, SiteCertificateIsNoServerCertificate) {
  const CheckReport report = Check(Config({{"tls", Tls("site-a.crt", "site-a.key")}}));
  EXPECT_EQ(Line(report, "certificate").result, CheckResult::kFail);
  EXPECT_THAT(Line(report, "certificate").text,
              AllOf(HasSubstr("is not a TLS server certificate"), HasSubstr("serverAuth")));
}

TEST_F(ServerPreflightTest, MissingModel) {
  const std::string missing = dir_ + "/no-such-model.bin";
  const CheckReport report = Check(Config({{"model", missing}}));
  EXPECT_FALSE(report.passed());
  EXPECT_EQ(Line(report, "model").result, CheckResult::kFail);
  EXPECT_THAT(Line(report, "model").text, AllOf(HasSubstr("config key 'model'"), HasSubstr(missing)));
  ExpectOthersOk(report, {"model"});
}

TEST_F(ServerPreflightTest, DirectoriesThatCannotBeUsed) {
  const CheckReport report = Check(Config({{"state_dir", dir_ + "/a-file/state"}, {"output_dir", dir_ + "/a-file"}}));
  EXPECT_FALSE(report.passed());
  EXPECT_EQ(Line(report, "state_dir").result, CheckResult::kFail);
  EXPECT_THAT(Line(report, "state_dir").text, AllOf(HasSubstr("config key 'state_dir'"), HasSubstr("cannot be created"),
                                                    HasSubstr("a-file is not a directory")));
  EXPECT_EQ(Line(report, "output_dir").result, CheckResult::kFail);
  EXPECT_THAT(Line(report, "output_dir").text, HasSubstr("exists and is not a directory"));
  ExpectOthersOk(report, {"state_dir", "output_dir"});
}

TEST_F(ServerPreflightTest, ListenAddressInUse) {
  const LoopbackPort held(true);
  const CheckReport report = Check(Config({{"listen_address", "\"" + held.address() + "\""}}));
  EXPECT_FALSE(report.passed());
  EXPECT_EQ(Line(report, "listen").result, CheckResult::kFail);
  EXPECT_THAT(Line(report, "listen").text,
              AllOf(HasSubstr("cannot listen on " + held.address()), HasSubstr("address already in use")));
  ExpectOthersOk(report, {"listen"});

  // --listen_address replaces the config's.
  CheckReport overridden;
  ServerPreflightOptions options;
  options.listen_address = LoopbackPort(false).address();
  RunServerPreflight(Config({{"listen_address", "\"" + held.address() + "\""}}), options, &overridden);
  EXPECT_EQ(Line(overridden, "listen").result, CheckResult::kOk) << overridden.ToString();
}

TEST_F(ServerPreflightTest, NoJobOfItsOwn) {
  const CheckReport report = Check(Config({{"model", ""}, {"state_dir", ""}, {"output_dir", ""}}));
  EXPECT_TRUE(report.passed()) << report.ToString();
  EXPECT_EQ(Line(report, "model").result, CheckResult::kSkip);
  EXPECT_EQ(report.Find("state_dir"), nullptr);
}

TEST_F(ServerPreflightTest, BadConfigStopsTheChecks) {
  const CheckReport report = Check(Config({{"allowed_clients", "[]"}}));
  ASSERT_EQ(report.lines().size(), 1u) << report.ToString();
  EXPECT_EQ(report.lines()[0].result, CheckResult::kFail);
  EXPECT_THAT(CheckReport::Format(report.lines()[0]), AllOf(HasSubstr("FAIL config: "), HasSubstr("allowed_clients")));
}

}  // namespace
}  // namespace fedprllm
