// Clean shutdown on SIGTERM and SIGINT for the daemons. Install() blocks both signals in the
// calling thread, so call it first in main(), before any other thread exists (threads
// inherit the mask); a dedicated thread then waits for them and runs `on_signal` once, with
// the signal's name. A second signal while shutting down ends the process at once (exit 130).
//
//   InstallShutdownHandler([&](const char* name) { job->RequestShutdown(name); });
#pragma once

#include <functional>

namespace fedprllm {

void InstallShutdownHandler(std::function<void(const char* signal_name)> on_signal);

}  // namespace fedprllm
