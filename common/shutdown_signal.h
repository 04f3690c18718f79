// Clean shutdown on SIGTERM and SIGINT for the daemons: after InstallShutdownHandler (call it
// early in main()), the first of them runs `on_signal` once, with the signal's name, on a
// dedicated thread; a second one ends the process at once (exit 130). SIGHUP (reload) has
// its own handler.
//
//   InstallShutdownHandler([&](const char* name) { job->RequestShutdown(name); });
#pragma once

#include <functional>

namespace fedprllm {

void InstallShutdownHandler(std::function<void(const char* signal_name)> on_signal);

// SIGHUP runs `on_reload` on a dedicated thread, once per signal (signals that arrive while
// it runs are merged into one more run). Call once, early in main().
void InstallReloadHandler(std::function<void()> on_reload);

// Flushes the logs and stdio and ends the process with `code` without running static
// destructors: threads of gRPC and of the gRPC log routing may still log while they would
// run. For the daemons' mains, once everything they did is durable.
[[noreturn]] void FlushAndExit(int code);

}  // namespace fedprllm
