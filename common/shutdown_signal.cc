// SIGTERM/SIGINT → a self-pipe → the thread that runs the shutdown callback. A handler
// (rather than a blocked mask and sigwait) also covers threads that libraries started before
// main() with the signals unblocked.
#include "common/shutdown_signal.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <thread>

#include "common/sanitizer_build.h"
#ifdef FEDPRLLM_ASAN
#include <sanitizer/lsan_interface.h>
#endif

namespace fedprllm {
namespace {

int pipe_fds[2] = {-1, -1};
std::atomic<bool> signalled{false};

void OnSignal(int signal) {
  if (signalled.exchange(true)) {
    static const char kMessage[] = "second signal: exiting now\n";
    (void)!::write(2, kMessage, sizeof(kMessage) - 1);
    ::_exit(130);
  }
  const char byte = static_cast<char>(signal);
  (void)!::write(pipe_fds[1], &byte, 1);
}

int reload_fds[2] = {-1, -1};

void OnReloadSignal(int /*signal*/) {
  const char byte = 1;
  (void)!::write(reload_fds[1], &byte, 1);  // a full pipe already holds a pending reload
}

}  // namespace

void InstallReloadHandler(std::function<void()> on_reload) {
  if (::pipe2(reload_fds, O_CLOEXEC | O_NONBLOCK) != 0) {
    std::perror("reload handler: pipe2");
    return;
  }
  ::fcntl(reload_fds[0], F_SETFL, 0);  // the reader blocks; the handler's end never does
  std::thread([on_reload = std::move(on_reload)] {
    char bytes[64];
    while (true) {
      if (::read(reload_fds[0], bytes, 1) != 1) continue;
      // Signals that came meanwhile are one more reload, not many.
      ::fcntl(reload_fds[0], F_SETFL, O_NONBLOCK);
      while (::read(reload_fds[0], bytes, sizeof(bytes)) > 0) {
      }
      ::fcntl(reload_fds[0], F_SETFL, 0);
      on_reload();
    }
  }).detach();
  struct sigaction action {};
  action.sa_handler = OnReloadSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  ::sigaction(SIGHUP, &action, nullptr);
}

void InstallShutdownHandler(std::function<void(const char* signal_name)> on_signal) {
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    std::perror("shutdown handler: pipe2");
    return;
  }
  std::thread([on_signal = std::move(on_signal)] {
    char byte = 0;
    while (::read(pipe_fds[0], &byte, 1) != 1) {
    }
    on_signal(byte == SIGTERM ? "SIGTERM" : "SIGINT");
  }).detach();
  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  ::sigaction(SIGTERM, &action, nullptr);
  ::sigaction(SIGINT, &action, nullptr);
}

void FlushAndExit(int code) {
  if (std::shared_ptr<spdlog::logger> logger = spdlog::default_logger()) logger->flush();
  std::fflush(stdout);
  std::fflush(stderr);
#ifdef FEDPRLLM_ASAN
  // std::_Exit skips LeakSanitizer's check at exit; the sanitized build (docs/sanitizers.md)
  // runs it here, so the daemons' leaks are reported too (a leak ends the process with ASan's
  // exit status, 1).
  __lsan_do_leak_check();
#endif
  std::_Exit(code);
}

}  // namespace fedprllm
