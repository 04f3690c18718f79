// Certificates for the tls tests, made once per test binary in a fresh directory under /tmp
// by deploy/make_certs.sh (CA, server, site-a, a rogue CA with mallory) plus openssl for an
// expired site certificate (expired.crt), one that expires in 10 days (soon.crt), both with
// site-a's key, and files that are not PEM. The directory is removed at exit
// unless a test failed. Header-only: tests include it.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"

namespace fedprllm::testing {

class TestCerts {
 public:
  // The shared set; fails the calling test (and returns an empty dir) if it cannot be made.
  static const TestCerts& Get() {
    static const TestCerts certs;
    EXPECT_TRUE(certs.ok_) << certs.log_;
    return certs;
  }
  ~TestCerts() {
    if (!dir_.empty() && !::testing::UnitTest::GetInstance()->Failed()) std::filesystem::remove_all(dir_);
  }

  std::string Path(const std::string& name) const { return dir_ + "/" + name; }
  const std::string& dir() const { return dir_; }

 private:
  TestCerts() {
    char tmpl[] = "/tmp/fedprllm-tls-test-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) return;
    dir_ = tmpl;
    const std::string d = dir_;
    const std::string log = d + "/make.log";
    const std::string script = std::string(FEDPRLLM_SOURCE_DIR) + "/deploy/make_certs.sh";
    // The expired certificate: a site-a key, signed by the federation CA, notAfter one day
    // before notBefore (openssl 3.0 takes a negative -days).
    const std::string cmd =
        "set -e; bash " + script + " " + d + " --rogue mallory site-a > " + log + " 2>&1; cd " + d +
        "; printf 'extendedKeyUsage=clientAuth\\nsubjectAltName=DNS:site-a\\n' > ext.cnf"
        "; openssl req -new -key site-a.key -subj /CN=site-a -out old.csr >> make.log 2>&1"
        "; openssl x509 -req -in old.csr -CA ca.crt -CAkey ca.key -set_serial 7 -days -1 -extfile ext.cnf"
        " -out expired.crt >> make.log 2>&1"
        "; openssl x509 -req -in old.csr -CA ca.crt -CAkey ca.key -set_serial 8 -days 10 -extfile ext.cnf"
        " -out soon.crt >> make.log 2>&1"
        "; printf 'this is not a certificate\\n' > garbage.pem"
        "; printf -- '-----BEGIN CERTIFICATE-----\\nnot*base64*at*all\\n-----END CERTIFICATE-----\\n' > damaged.pem"
        "; : > empty.pem";
    ok_ = std::system(("bash -c \"" + Escape(cmd) + "\"").c_str()) == 0;
    std::ifstream in(log);
    std::stringstream text;
    text << in.rdbuf();
    log_ = text.str();
  }

  static std::string Escape(const std::string& s) {
    std::string out;
    for (char c : s) {
      if (c == '"' || c == '\\' || c == '$' || c == '`') out += '\\';
      out += c;
    }
    return out;
  }

  std::string dir_;
  bool ok_ = false;
  std::string log_;
};

// Makes `name`.key and `name`.crt in `dir`: a new EC key and a server certificate for
// localhost and 127.0.0.1 with serial `serial_hex`, valid for 30 days, signed by
// `dir`/ca.{crt,key} (as deploy/make_certs.sh lays them out). False if openssl failed; its
// output is in `dir`/`name`.log.
inline bool MakeServerCertificate(const std::string& dir, const std::string& name, const std::string& serial_hex) {
  const std::string n = dir + "/" + name;
  const std::string cmd =
      "printf 'extendedKeyUsage=serverAuth\\nsubjectAltName=DNS:localhost,IP:127.0.0.1\\n' > " + n + ".cnf" +
      " && openssl ecparam -name prime256v1 -genkey -noout -out " + n + ".key" +
      " && openssl req -new -key " + n + ".key -subj /CN=localhost -out " + n + ".csr" +
      " && openssl x509 -req -in " + n + ".csr -CA " + dir + "/ca.crt -CAkey " + dir + "/ca.key -set_serial 0x" +
      serial_hex + " -days 30 -extfile " + n + ".cnf -out " + n + ".crt";
  return std::system(("(" + cmd + ") > " + n + ".log 2>&1").c_str()) == 0;
}

// Makes the certificates before the first test, so that a check's `now` does not precede
// their notBefore. Register it once per test binary that needs them:
//   ::testing::Environment* const kCerts = ::testing::AddGlobalTestEnvironment(new testing::MakeCertificatesFirst);
class MakeCertificatesFirst : public ::testing::Environment {
 public:
  void SetUp() override { TestCerts::Get(); }
};

}  // namespace fedprllm::testing
