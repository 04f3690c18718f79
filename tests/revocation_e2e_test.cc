// Revocation and server-certificate rotation mid-job: a real fedprllm-server with tls.crl
// and three fedprllm-client processes run an iterative job (one round per decoder layer)
// with min_clients 2. After round 1 opens, the federation CA revokes site-c, a new server
// certificate replaces the old files, and the server gets SIGHUP: site-c's next call is
// refused (on its already open connection too), site-c stops, new connections see the new
// server certificate, and the job completes with site-a and site-b, whose decisions the
// report lists.
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <thread>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e_harness.h"
#include "tests/federation_files.h"
#include "tls/test_certs.h"
#include "tls/test_crl.h"

namespace fedprllm {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using e2e::ChildProcess;
using e2e::FederationFiles;
using e2e::FreePort;
using e2e::kSites;
using e2e::ReadAll;
using e2e::StartClient;
using e2e::StartServer;
using e2e::WaitForText;

// The serial of the certificate that a new TLS connection to 127.0.0.1:`port` sees, as
// openssl prints it ("serial=99"), or openssl's error.
std::string PresentedServerSerial(const std::string& certs, int port, const std::string& dir) {
  const std::string out = dir + "/s_client.txt";
  const std::string cmd = "openssl s_client -connect 127.0.0.1:" + std::to_string(port) + " -cert " + certs +
                          "/site-a.crt -key " + certs + "/site-a.key -CAfile " + certs +
                          "/ca.crt < /dev/null 2> " + out + ".err | openssl x509 -noout -serial > " + out + " 2>&1";
  return std::system(cmd.c_str()) == 0 ? ReadAll(out) : ReadAll(out + ".err");
}

TEST(RevocationE2eTest, ARevokedSiteIsRefusedAfterSighupAndTheJobCompletesWithoutIt) {
  std::unique_ptr<FederationFiles> files = FederationFiles::Make();
  ASSERT_TRUE(files->ok()) << files->error();
  const std::string certs = files->Certs();
  const std::string crl = files->dir() + "/ca.crl";
  ASSERT_TRUE(testing::WriteTestCrl(certs + "/ca.crt", certs + "/ca.key", {}, crl));

  const int port = FreePort();
  e2e::RunSettings settings;
  settings.strategy = "iterative";
  const std::string run =
      files->WriteServerConfig("revocation", settings, port, "expected_clients: 3\nmin_clients: 2\nsite_timeout_seconds: 10\n");
  std::string yaml = ReadAll(run + "/server.yaml");
  const std::string ca = "/ca.crt}";
  ASSERT_NE(yaml.find(ca), std::string::npos) << yaml;
  yaml.replace(yaml.find(ca), ca.size(), "/ca.crt, crl: " + crl + "}");
  e2e::WriteAll(run + "/server.yaml", yaml);
  auto server = StartServer(run, port);
  ASSERT_TRUE(e2e::PortOpen(port)) << server->Log();
  EXPECT_THAT(server->Log(), HasSubstr("access: 3 sites, 0 operators, 0 monitors, 0 revoked certificates"));
  // site-c dies half-way through its round-1 upload, so round 1 waits for it (until it is
  // lost, site_timeout_seconds) while the CA revokes it: the job cannot end before the reload,
  // however fast the rounds are.
  std::vector<std::unique_ptr<ChildProcess>> clients;
  for (const std::string& site : kSites) {
    std::vector<std::string> env;
    if (site == "site-c") env.push_back("FEDPRLLM_CRASH_AT=client-upload-half#2");
    clients.push_back(StartClient(files->WriteClientConfig(run, site, port, certs), run + "/" + site + ".log", env));
  }
  ASSERT_TRUE(WaitForText(run + "/server.log", "round 1 opened", 120)) << server->Log();
  EXPECT_NE(clients[2]->Wait(60), 0) << clients[2]->Log();

  EXPECT_THAT(PresentedServerSerial(certs, port, run), HasSubstr("serial="));
  EXPECT_THAT(PresentedServerSerial(certs, port, run), Not(HasSubstr("serial=99")));

  // The CA revokes site-c and issues a new server certificate; the server reloads both.
  ASSERT_TRUE(testing::WriteTestCrl(certs + "/ca.crt", certs + "/ca.key", {certs + "/site-c.crt"}, crl));
  ASSERT_TRUE(testing::MakeServerCertificate(certs, "next", "99")) << ReadAll(certs + "/next.log");
  std::filesystem::rename(certs + "/next.crt", certs + "/server.crt");
  std::filesystem::rename(certs + "/next.key", certs + "/server.key");
  server->Signal(SIGHUP);
  ASSERT_TRUE(WaitForText(run + "/server.log", "SIGHUP: reloaded", 30)) << server->Log();
  EXPECT_THAT(server->Log(), HasSubstr("1 revoked certificates"));
  ASSERT_TRUE(WaitForText(run + "/server.log", "SIGHUP: tls.cert now certificate CN=localhost serial 99", 30))
      << server->Log();
  std::string presented;
  for (int i = 0; i < 30 && presented.find("serial=99") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    presented = PresentedServerSerial(certs, port, run);
  }
  EXPECT_THAT(presented, HasSubstr("serial=99"));

  // site-c starts again and is refused: its certificate is revoked.
  clients[2] = StartClient(files->WriteClientConfig(run, "site-c", port, certs), run + "/site-c-again.log");
  EXPECT_NE(clients[2]->Wait(120), 0) << clients[2]->Log();
  EXPECT_THAT(clients[2]->Log(), HasSubstr("revoked by the federation CA"));
  for (int i = 0; i < 2; ++i) EXPECT_EQ(clients[i]->Wait(180), 0) << clients[i]->Log();
  ASSERT_EQ(server->Wait(60), 0) << server->Log();
  EXPECT_THAT(server->Log(), HasSubstr("certificate names [site-c] is revoked by tls.crl"));

  // Every round after the revocation was decided by site-a and site-b alone.
  const nlohmann::json report = nlohmann::json::parse(ReadAll(run + "/out/report.json"), nullptr, false);
  ASSERT_TRUE(report.is_object()) << ReadAll(run + "/out/report.json");
  ASSERT_TRUE(report.contains("rounds")) << report.dump();
  const auto& rounds = report["rounds"];
  ASSERT_EQ(rounds.size(), 5u) << report.dump();
  EXPECT_EQ(rounds.back()["clients"], nlohmann::json({"site-a", "site-b"})) << report.dump();
  EXPECT_EQ(rounds.front()["clients"], nlohmann::json(kSites)) << report.dump();
}

}  // namespace
}  // namespace fedprllm
