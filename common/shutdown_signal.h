// Clean shutdown on SIGTERM and SIGINT for the daemons: after InstallShutdownHandler (call it
// early in main()), the first of them runs `on_signal` once, with the signal's name, on a
// dedicated thread; a second one ends the process at once (exit 130).
//
//   InstallShutdownHandler([&](const char* name) { job->RequestShutdown(name); });
#pragma once

#include <functional>

namespace fedprllm {

void InstallShutdownHandler(std::function<void(const char* signal_name)> on_signal);

}  // namespace fedprllm
