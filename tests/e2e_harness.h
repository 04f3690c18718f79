// Shared pieces of the end-to-end tests: child processes with their own log file (killed by
// PID when the test ends), free loopback ports, and small file helpers.
//
//   ChildProcess server({FEDPRLLM_SERVER_BIN, "--config", path}, run + "/server.log");
//   EXPECT_EQ(server.Wait(60), 0) << server.Log();
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace fedprllm::e2e {

std::string ReadAll(const std::string& path);
void WriteAll(const std::string& path, const std::string& text);

// A child process whose stdout and stderr go to a log file (appended, so a restarted
// process keeps one log). The destructor kills it by PID (SIGKILL) and reaps it if it is
// still running, so no process outlives a failed test.
class ChildProcess {
 public:
  // `env` adds or overrides "NAME=value" entries of this process's environment.
  ChildProcess(const std::vector<std::string>& argv, const std::string& log, const std::vector<std::string>& env = {});
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  bool started() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  // Exit code (128 + signal when killed), or -1 if still running after `timeout_s` (then it
  // is left to the destructor).
  int Wait(double timeout_s);
  // Sends `signal` to the process if it is still running.
  void Signal(int signal);
  std::string Log() const { return ReadAll(log_); }
  // Where this process's output starts in Log() (the log is appended to).
  size_t log_start() const { return log_start_; }

 private:
  pid_t pid_ = -1;
  std::string log_;
  size_t log_start_ = 0;
  bool exited_ = false;
  int code_ = -1;
};

// A loopback TCP port that was free a moment ago, outside the ephemeral range.
int FreePort();
// Waits until `server` has logged "listening on" and accepts connections on `port`: true
// then; false if it exited or `timeout_s` passed. Checking its own log, not only the port,
// keeps a test from talking to another test's server.
bool WaitUntilListening(ChildProcess& server, int port, double timeout_s);
// True if something accepts connections on 127.0.0.1:`port`.
bool PortOpen(int port);
// Lower-case hex SHA-256 of a file's bytes ("" if it cannot be read).
std::string Sha256OfFile(const std::string& path);
// SHA-256 of a safetensors file's tensors (entries and bytes) without its __metadata__, which
// records the job that wrote it: equal for the same model written by different jobs.
std::string Sha256OfSafetensorsTensors(const std::string& path);
// Polls `path` for `text` until it appears or `timeout_s` passes.
bool WaitForText(const std::string& path, const std::string& text, double timeout_s);

}  // namespace fedprllm::e2e
