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

}  // namespace fedprllm::testing
