// Clean shutdown on SIGTERM and SIGINT for the daemons: after InstallShutdownHandler (call it
// early in main()), the first of them runs `on_signal` once, with the signal's name, on a
// dedicated thread; a second one ends the process at once (exit 130).
//
//   InstallShutdownHandler([&](const char* name) { job->RequestShutdown(name); });
#pragma once

#include <functional>

namespace fedprllm {

void InstallShutdownHandler(std::function<void(const char* signal_name)> on_signal);

// Flushes the logs and stdio and ends the process with `code` without running static
// destructors: threads of gRPC and of the gRPC log routing may still log while they would
// run. For the daemons' mains, once everything they did is durable.
[[noreturn]] void FlushAndExit(int code);

}  // namespace fedprllm
