// The commands of fedprllm-admin: their usage text, the check of a command line's
// positional arguments and flags, and running one command over an AdminClient with its
// output (human or JSON) on `out` and its errors on `err`. The binary's main is a thin shell
// over RunAdminCommand; tests drive it against a fake server.
//
//   ASSIGN_OR_RETURN(AdminCommand command, ParseAdminCommand({"status", "nightly"}, options));
//   return RunAdminCommand(command, options, *client, std::cout, std::cerr);
#pragma once

#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "admin/admin_client.h"

namespace fedprllm {

// The usage line and the list of commands (what --help and a usage error print).
extern const char kAdminUsage[];

// One invocation's options (fedprllm-admin's flags) and the seams tests replace.
struct AdminOptions {
  // Print each response as JSON on stdout: one document, or (status --watch, logs --follow)
  // one compact document per line per update. Default false.
  bool json = false;
  // status: print again every `interval` until the job has ended. Default false.
  bool watch = false;
  // status --watch: time between prints. Default 2 s. Bounds (0, 1 h].
  absl::Duration interval = absl::Seconds(2);
  // status --watch: clear the screen before each print (set when stdout is a terminal).
  bool clear_screen = false;
  // logs: keep printing new lines until the job has ended. Default false.
  bool follow = false;
  // logs: the first line to print (0-based). Default 0. Must be >= 0.
  int64_t from_line = 0;
  // abort: why, for the job's status and log. Default "".
  std::string reason;

  // The clock and zone of printed times. Defaults: absl::Now, the local zone.
  std::function<absl::Time()> now = [] { return absl::Now(); };
  absl::TimeZone zone = absl::LocalTimeZone();
  // Waits between --watch prints; returns false to stop watching. Default: sleeps, true.
  std::function<bool(absl::Duration)> sleep = [](absl::Duration d) {
    absl::SleepFor(d);
    return true;
  };
};

// A checked command line: the command's name and its arguments.
struct AdminCommand {
  std::string name;               // "submit", "jobs", "status", "abort", "sites", "logs", "health"
  std::vector<std::string> args;  // its positional arguments (JOB.yaml or NAME), 0 or 1
};

// Checks `positional` (the arguments after the flags' removal, without argv[0]) and the
// options that apply to one command only. INVALID_ARGUMENT saying what is wrong (a usage
// error: no command, unknown command, missing or extra argument, --watch without status,
// a bad --interval, ...).
absl::StatusOr<AdminCommand> ParseAdminCommand(const std::vector<std::string>& positional, const AdminOptions& options);

// Checks that every flag in argv[1..] (up to "--") is defined, and that a flag that needs a
// value has one, so that a mistyped flag is a usage error (exit 2) rather than absl's exit
// 1. INVALID_ARGUMENT naming the flag.
absl::Status CheckFlagNames(int argc, char** argv);

// Runs `command`: its output goes to `out` (flushed after each print), errors to `err` as
// AdminErrorText. Returns the exit status: 0 on success; 1 on an error, and for `health`
// when the answer is not SERVING.
int RunAdminCommand(const AdminCommand& command, const AdminOptions& options, AdminClient& client, std::ostream& out,
                    std::ostream& err);

// "fedprllm-admin: error: CODE: message\n", plus "fedprllm-admin: hint: ...\n" when the
// status carries kAdminHintPayload.
std::string AdminErrorText(const absl::Status& status);

}  // namespace fedprllm
