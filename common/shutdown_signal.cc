// The signal-waiting thread behind InstallShutdownHandler.
#include "common/shutdown_signal.h"

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <thread>

namespace fedprllm {

void InstallShutdownHandler(std::function<void(const char* signal_name)> on_signal) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread([set, on_signal = std::move(on_signal)] {
    int signal = 0;
    if (sigwait(&set, &signal) != 0) return;
    on_signal(signal == SIGTERM ? "SIGTERM" : "SIGINT");
    if (sigwait(&set, &signal) != 0) return;
    std::fprintf(stderr, "second %s: exiting now\n", signal == SIGTERM ? "SIGTERM" : "SIGINT");
    std::_Exit(130);
  }).detach();
}

}  // namespace fedprllm
