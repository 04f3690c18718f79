// An in-process gRPC server on 127.0.0.1 with the server credentials fedprllm-server uses
// (mutual TLS, client certificates required and verified against the federation CA),
// plaintext, or credentials of the test's own. It serves no methods (a generic service answers UNIMPLEMENTED): the tls tests
// need only its handshakes. Header-only: tests include it.
#pragma once

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <string>

namespace fedprllm::testing {

inline std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

class TestGrpcServer {
 public:
  // TLS with `dir`/server.{crt,key} and `dir`/ca.crt; plaintext if `dir` is empty.
  explicit TestGrpcServer(const std::string& dir) : TestGrpcServer(Credentials(dir)) {}
  // With the given credentials.
  explicit TestGrpcServer(const std::shared_ptr<grpc::ServerCredentials>& credentials) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", credentials, &port_);
    builder.RegisterCallbackGenericService(&service_);
    server_ = builder.BuildAndStart();
  }
  ~TestGrpcServer() {
    if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now());
  }

  bool ok() const { return server_ != nullptr && port_ > 0; }
  int port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  static std::shared_ptr<grpc::ServerCredentials> Credentials(const std::string& dir) {
    if (dir.empty()) return grpc::InsecureServerCredentials();
    grpc::SslServerCredentialsOptions options(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    options.pem_root_certs = ReadAll(dir + "/ca.crt");
    options.pem_key_cert_pairs.push_back({ReadAll(dir + "/server.key"), ReadAll(dir + "/server.crt")});
    return grpc::SslServerCredentials(options);
  }

  grpc::CallbackGenericService service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace fedprllm::testing
