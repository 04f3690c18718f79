// `fedprllm-client check` (RunClientPreflight) against an in-process mutual-TLS gRPC server
// that implements only WhoAmI, with the bundled stories260K model and TinyStories text: a
// good config passes every check; each broken one (expired certificate, key of another
// certificate, missing model, too little calibration text, wrong server name, identity not
// allowed, no server, bad YAML) fails on its own line with the problem in words, and the
// checks it does not concern still pass.
#include "client/preflight.h"

#include <grpcpp/grpcpp.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <set>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/llama_model.h"
#include "model/test_paths.h"
#include "proto/fedprllm.grpc.pb.h"
#include "tls/test_certs.h"
#include "tls/test_server.h"

namespace fedprllm {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::TestCerts;

::testing::Environment* const kMakeCertificatesFirst =
    ::testing::AddGlobalTestEnvironment(new testing::MakeCertificatesFirst);

// The server's side of WhoAmI: the peer certificate's identity, "site" if allowlisted.
class WhoAmIService final : public v1::FedPrLLM::Service {
 public:
  explicit WhoAmIService(std::set<std::string> allowed) : allowed_(std::move(allowed)) {}
  grpc::Status WhoAmI(grpc::ServerContext* context, const v1::WhoAmIRequest*, v1::WhoAmIResponse* response) override {
    std::string identity;
    for (const grpc::string_ref& name : context->auth_context()->FindPropertyValues("x509_common_name")) {
      identity.assign(name.data(), name.size());
    }
    if (allowed_.count(identity) == 0) {
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "'" + identity + "' is not an allowed client");
    }
    response->set_identity(identity);
    response->set_role("site");
    response->set_server_version("0.4.0");
    return grpc::Status::OK;
  }

 private:
  const std::set<std::string> allowed_;
};

// fedprllm-server's credentials (client certificates required and verified) on 127.0.0.1.
class FakeServer {
 public:
  explicit FakeServer(std::set<std::string> allowed) : service_(std::move(allowed)) {
    const TestCerts& certs = TestCerts::Get();
    grpc::SslServerCredentialsOptions options(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    options.pem_root_certs = testing::ReadAll(certs.Path("ca.crt"));
    options.pem_key_cert_pairs.push_back(
        {testing::ReadAll(certs.Path("server.key")), testing::ReadAll(certs.Path("server.crt"))});
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::SslServerCredentials(options), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
  }
  ~FakeServer() {
    if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now());
  }
  bool ok() const { return server_ != nullptr && port_ > 0; }
  int port() const { return port_; }

 private:
  WhoAmIService service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

constexpr int64_t kTextBytes = 20000;  // about 5,000 tokens of TinyStories for stories260K

class ClientPreflightTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.ok());
    const std::string text = testing::ReadAll(testing::SharedData("tinystories/tinystories_val.txt"));
    if (text.size() < static_cast<size_t>(kTextBytes)) GTEST_SKIP() << "../shared/data/tinystories missing";
    char tmpl[] = "/tmp/fedprllm-preflight-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    std::ofstream(dir_ + "/site-a.txt") << text.substr(0, kTextBytes);
    std::ofstream(dir_ + "/short.txt") << text.substr(0, 300);
    absl::StatusOr<LlamaModel> model = LlamaModel::Load(testing::BundledModel());
    ASSERT_TRUE(model.ok()) << model.status();
    fingerprint_ = model->Fingerprint();
  }
  void TearDown() override {
    if (!dir_.empty() && !HasFailure()) std::filesystem::remove_all(dir_);
  }

  // A valid config for site-a against server_, with `extra` YAML lines overriding keys
  // (later keys of a YAML map are rejected as duplicates, so the overridden ones are left out).
  std::string Config(const std::map<std::string, std::string>& overrides = {}) const {
    const TestCerts& certs = TestCerts::Get();
    std::map<std::string, std::string> keys = {
        {"server_address", "\"localhost:" + std::to_string(server_.port()) + "\""},
        {"tls", "{cert: " + certs.Path("site-a.crt") + ", key: " + certs.Path("site-a.key") +
                    ", ca: " + certs.Path("ca.crt") + "}"},
        {"name", "site-a"},
        {"model", testing::BundledModel()},
        {"models", "{stories260K: " + testing::SharedData("stories260K/stories260K.bin") + "}"},
        {"calibration", "[" + dir_ + "/site-a.txt]"},
        {"nsamples", "8"},
        {"seqlen", "64"},
    };
    for (const auto& [key, value] : overrides) keys[key] = value;
    std::string yaml;
    for (const auto& [key, value] : keys) {
      if (!value.empty()) yaml += key + ": " + value + "\n";
    }
    const std::string path = dir_ + "/client-" + std::to_string(++configs_) + ".yaml";
    std::ofstream(path) << yaml;
    return path;
  }

  CheckReport Check(const std::string& path) const {
    CheckReport report;
    ClientPreflightOptions options;
    options.server_timeout = absl::Seconds(5);
    RunClientPreflight(path, options, &report);
    return report;
  }

  // The line `name`; fails the test if there is none.
  static CheckLine Line(const CheckReport& report, const std::string& name) {
    const CheckLine* line = report.Find(name);
    EXPECT_NE(line, nullptr) << "no line '" << name << "' in:\n" << report.ToString();
    return line != nullptr ? *line : CheckLine{CheckResult::kSkip, name, "(missing)"};
  }

  // Every line except those named in `except` is ok.
  static void ExpectOthersOk(const CheckReport& report, const std::set<std::string>& except) {
    for (const CheckLine& line : report.lines()) {
      if (except.count(line.name) == 0) {
        EXPECT_EQ(line.result, CheckResult::kOk) << CheckReport::Format(line);
      }
    }
  }

  FakeServer server_{{"site-a"}};
  std::string dir_;
  std::string fingerprint_;
  mutable int configs_ = 0;
};

TEST_F(ClientPreflightTest, GoodConfigPassesEveryCheck) {
  const std::string path = Config();
  const CheckReport report = Check(path);
  EXPECT_TRUE(report.passed()) << report.ToString();
  std::vector<std::string> names;
  for (const CheckLine& line : report.lines()) names.push_back(line.name);
  EXPECT_THAT(names,
              ::testing::ElementsAre("config", "certificate", "server", "model", "model stories260K", "calibration"))
      << report.ToString();
  ExpectOthersOk(report, {});
  EXPECT_THAT(CheckReport::Format(Line(report, "config")), HasSubstr("ok   config: " + path));
  EXPECT_THAT(Line(report, "certificate").text, AllOf(HasSubstr("site-a.crt (CN=site-a"), HasSubstr("valid until")));
  EXPECT_EQ(Line(report, "server").text,
            "localhost:" + std::to_string(server_.port()) + " accepts this site as site-a (role site, server 0.4.0)");
  for (const std::string model : {"model", "model stories260K"}) {
    EXPECT_THAT(Line(report, model).text, AllOf(HasSubstr("stories260K.bin: 5 layers, hidden 64"),
                                                HasSubstr("vocab 512"), HasSubstr("fingerprint " + fingerprint_)));
  }
  // The two models' tokenizers are copies of one file: one calibration line.
  EXPECT_THAT(Line(report, "calibration").text, AllOf(HasSubstr(" tokens from 1 source (tokenizer "),
                                                      HasSubstr("need nsamples x seqlen = 8 x 64 = 512")));
}

TEST_F(ClientPreflightTest, ExpiredCertificate) {
  const TestCerts& certs = TestCerts::Get();
  const CheckReport report =
      Check(Config({{"tls", "{cert: " + certs.Path("expired.crt") + ", key: " + certs.Path("site-a.key") +
                                ", ca: " + certs.Path("ca.crt") + "}"}}));
  EXPECT_FALSE(report.passed());
  const CheckLine cert = Line(report, "certificate");
  EXPECT_EQ(cert.result, CheckResult::kFail);
  EXPECT_THAT(cert.text, AllOf(HasSubstr("expired.crt"), HasSubstr("expired on"), HasSubstr("UTC")));
  EXPECT_EQ(Line(report, "server").result, CheckResult::kSkip);
  ExpectOthersOk(report, {"certificate", "server"});
}

TEST_F(ClientPreflightTest, CertificateExpiringSoonIsAWarning) {
  const TestCerts& certs = TestCerts::Get();
  const CheckReport report =
      Check(Config({{"tls", "{cert: " + certs.Path("soon.crt") + ", key: " + certs.Path("site-a.key") +
                                ", ca: " + certs.Path("ca.crt") + "}"}}));
  EXPECT_TRUE(report.passed()) << report.ToString();
  const CheckLine cert = Line(report, "certificate");
  EXPECT_EQ(cert.result, CheckResult::kWarn);
  EXPECT_THAT(cert.text, AllOf(HasSubstr("soon.crt"), HasSubstr("expires in 9 days"), HasSubstr("(notAfter)")));
  ExpectOthersOk(report, {"certificate"});
}

TEST_F(ClientPreflightTest, KeyDoesNotMatchTheCertificate) {
  const TestCerts& certs = TestCerts::Get();
  const CheckReport report =
      Check(Config({{"tls", "{cert: " + certs.Path("site-a.crt") + ", key: " + certs.Path("server.key") +
                                ", ca: " + certs.Path("ca.crt") + "}"}}));
  EXPECT_FALSE(report.passed());
  const CheckLine cert = Line(report, "certificate");
  EXPECT_EQ(cert.result, CheckResult::kFail);
  EXPECT_THAT(cert.text, AllOf(HasSubstr("server.key"), HasSubstr("is not the private key of the certificate in"),
                               HasSubstr("site-a.crt")));
  ExpectOthersOk(report, {"certificate", "server"});
}

TEST_F(ClientPreflightTest, MissingModelPath) {
  const std::string missing = dir_ + "/no-such-model.bin";
  const CheckReport with_other = Check(Config({{"models", "{gone: " + missing + "}"}}));
  EXPECT_FALSE(with_other.passed());
  const CheckLine gone = Line(with_other, "model gone");
  EXPECT_EQ(gone.result, CheckResult::kFail);
  EXPECT_THAT(gone.text, AllOf(HasSubstr("not found"), HasSubstr(missing)));
  ExpectOthersOk(with_other, {"model gone"});  // calibration counted with `model`'s tokenizer

  // No model loads: the text is still read, but its tokens cannot be counted.
  const CheckReport none = Check(Config({{"model", missing}, {"models", ""}}));
  EXPECT_FALSE(none.passed());
  EXPECT_EQ(Line(none, "model").result, CheckResult::kFail);
  EXPECT_THAT(Line(none, "model").text, HasSubstr(missing));
  EXPECT_EQ(Line(none, "calibration").result, CheckResult::kSkip);
  EXPECT_THAT(Line(none, "calibration").text, HasSubstr("20000 bytes read from 1 source"));
}

TEST_F(ClientPreflightTest, TooLittleCalibrationText) {
  // 300 bytes are well under 257 tokens: not one window of 256 fits.
  const CheckReport report =
      Check(Config({{"calibration", "[" + dir_ + "/short.txt]"}, {"nsamples", "128"}, {"seqlen", "256"}}));
  EXPECT_FALSE(report.passed());
  const CheckLine calibration = Line(report, "calibration");
  EXPECT_EQ(calibration.result, CheckResult::kFail);
  EXPECT_THAT(calibration.text,
              AllOf(HasSubstr(" tokens from 1 source"), HasSubstr("too few tokens"),
                    HasSubstr("needs at least 257 tokens"), HasSubstr("nsamples x seqlen = 128 x 256 = 32768")));
  ExpectOthersOk(report, {"calibration"});

  // Enough for a window but not for 128 separate ones: SampleWindows works (the windows
  // overlap), so it is a warning.
  const CheckReport overlapping = Check(Config({{"nsamples", "128"}, {"seqlen", "256"}}));
  EXPECT_TRUE(overlapping.passed()) << overlapping.ToString();
  EXPECT_EQ(Line(overlapping, "calibration").result, CheckResult::kWarn);
  EXPECT_THAT(Line(overlapping, "calibration").text,
              AllOf(HasSubstr("fewer than nsamples x seqlen = 128 x 256 = 32768"), HasSubstr("overlap")));

  const CheckReport missing = Check(Config({{"calibration", "[" + dir_ + "/none.txt]"}}));
  EXPECT_EQ(Line(missing, "calibration").result, CheckResult::kFail);
  EXPECT_THAT(Line(missing, "calibration").text, HasSubstr("none.txt"));
}

TEST_F(ClientPreflightTest, TokenIdsAreCheckedAgainstTheModelsVocabulary) {
  absl::StatusOr<LlamaModel> model = LlamaModel::Load(testing::BundledModel());
  ASSERT_TRUE(model.ok());
  const int64_t vocab = model->config().vocab_size;
  auto uint16_file = [this](const std::string& name, const std::vector<int64_t>& ids) {
    std::string bytes;
    for (int64_t id : ids) bytes += {static_cast<char>(id & 0xFF), static_cast<char>((id >> 8) & 0xFF)};
    std::ofstream(dir_ + "/" + name, std::ios::binary) << bytes;
    return "[" + dir_ + "/" + name + ":uint16]";
  };
  std::vector<int64_t> ids(4000);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>(i) % vocab;
  const CheckReport good = Check(Config({{"calibration", uint16_file("ids.bin", ids)}}));
  EXPECT_TRUE(good.passed()) << good.ToString();
  EXPECT_THAT(Line(good, "calibration").text, HasSubstr("4000 tokens from 1 source"));
  ids[1234] = vocab;
  const CheckReport bad = Check(Config({{"calibration", uint16_file("bad.bin", ids)}}));
  EXPECT_EQ(Line(bad, "calibration").result, CheckResult::kFail);
  EXPECT_THAT(Line(bad, "calibration").text,
              HasSubstr(absl::StrCat("bad.bin: index 1234 (byte 2468): id ", vocab, " is outside the vocabulary [0, ",
                                     vocab, ")")));
  ExpectOthersOk(bad, {"calibration"});
}

TEST_F(ClientPreflightTest, SeqlenAboveTheModelsPositionsFailsTheModelLine) {
  absl::StatusOr<LlamaModel> model = LlamaModel::Load(testing::BundledModel());
  ASSERT_TRUE(model.ok());
  const int64_t max_positions = model->config().max_position_embeddings;
  const CheckReport report = Check(Config({{"seqlen", std::to_string(max_positions + 1)}, {"nsamples", "1"}}));
  EXPECT_FALSE(report.passed());
  EXPECT_EQ(Line(report, "model").result, CheckResult::kFail);
  EXPECT_THAT(Line(report, "model").text,
              HasSubstr(absl::StrCat("config key 'seqlen': ", max_positions + 1,
                                     " exceeds the model's max_position_embeddings ", max_positions)));
}

TEST_F(ClientPreflightTest, WrongServerName) {
  const CheckReport report = Check(Config({{"server_name", "fedprllm.example.org"}}));
  EXPECT_FALSE(report.passed());
  const CheckLine server = Line(report, "server");
  EXPECT_EQ(server.result, CheckResult::kFail);
  EXPECT_THAT(server.text, AllOf(HasSubstr("server name mismatch"), HasSubstr("not for \"fedprllm.example.org\""),
                                 HasSubstr("[localhost, 127.0.0.1]")));
  ExpectOthersOk(report, {"server"});
}

TEST_F(ClientPreflightTest, IdentityNotAllowedByTheServer) {
  FakeServer others({"site-b"});
  ASSERT_TRUE(others.ok());
  const CheckReport report = Check(Config({{"server_address", "\"127.0.0.1:" + std::to_string(others.port()) + "\""}}));
  EXPECT_FALSE(report.passed());
  const CheckLine server = Line(report, "server");
  EXPECT_EQ(server.result, CheckResult::kFail);
  EXPECT_THAT(server.text, AllOf(HasSubstr("refuses this site's identity site-a"), HasSubstr("allowed_clients")));
}

TEST_F(ClientPreflightTest, NoServerListening) {
  int port = 0;
  {
    FakeServer gone({"site-a"});
    port = gone.port();
  }
  const CheckReport report = Check(Config({{"server_address", "\"127.0.0.1:" + std::to_string(port) + "\""}}));
  EXPECT_FALSE(report.passed());
  EXPECT_EQ(Line(report, "server").result, CheckResult::kFail);
  EXPECT_THAT(Line(report, "server").text, HasSubstr("cannot connect to 127.0.0.1:" + std::to_string(port)));
}

TEST_F(ClientPreflightTest, BadConfigStopsTheChecks) {
  const CheckReport report = Check(Config({{"nsamples", "0"}}));
  EXPECT_FALSE(report.passed());
  ASSERT_EQ(report.lines().size(), 1u) << report.ToString();
  EXPECT_EQ(report.lines()[0].result, CheckResult::kFail);
  EXPECT_THAT(report.lines()[0].text, HasSubstr("'nsamples'"));

  CheckReport missing;
  EXPECT_FALSE(RunClientPreflight(dir_ + "/none.yaml", {}, &missing));
  EXPECT_THAT(CheckReport::Format(missing.lines().at(0)), AllOf(HasSubstr("FAIL config: "), HasSubstr("none.yaml")));
}

TEST_F(ClientPreflightTest, ServerAddressOverride) {
  CheckReport report;
  ClientPreflightOptions options;
  options.server_address = "localhost:" + std::to_string(server_.port());
  RunClientPreflight(Config({{"server_address", "\"localhost:1\""}}), options, &report);
  EXPECT_EQ(Line(report, "server").result, CheckResult::kOk) << report.ToString();
}

}  // namespace
}  // namespace fedprllm
