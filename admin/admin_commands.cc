// fedprllm-admin's commands: argument checks, the RPC each makes, and what each prints.
#include "admin/admin_commands.h"

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/algorithm/container.h"
#include "absl/flags/reflection.h"
#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "admin/admin_format.h"
#include "common/status_macros.h"

namespace fedprllm {

const char kAdminUsage[] =
    "fedprllm-admin --config admin.yaml [flags] COMMAND [ARG]\n"
    "\n"
    "The operator's client of fedprllm-server (deploy/admin.example.yaml). Commands:\n"
    "  submit JOB.yaml  queue the job JOB.yaml describes\n"
    "  jobs             every job the server knows, in submission order\n"
    "  status [NAME]    one job in detail, with its sites (default: the running job, or the\n"
    "                   last to end); --watch prints it again every --interval seconds\n"
    "  abort NAME       stop a queued or running job (--reason TEXT says why)\n"
    "  sites            the allowlisted sites, whether each is connected, what each does\n"
    "  logs NAME        a job's log from --from_line; --follow waits for new lines\n"
    "  health           the server's health: SERVING (exit 0) or not (exit 1)\n"
    "--json prints the response as JSON. Exit status: 0 ok, 1 error, 2 usage error.";

namespace {

struct CommandSpec {
  const char* name;
  int min_args;
  int max_args;
  const char* synopsis;
};

constexpr CommandSpec kCommands[] = {
    {"submit", 1, 1, "submit JOB.yaml"}, {"jobs", 0, 0, "jobs"},   {"status", 0, 1, "status [NAME]"},
    {"abort", 1, 1, "abort NAME"},       {"sites", 0, 0, "sites"}, {"logs", 1, 1, "logs NAME"},
    {"health", 0, 0, "health"},
};

absl::StatusOr<std::string> ReadJobFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read job file ", path));
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("error reading job file ", path));
  return text.str();
}

// One JSON document: pretty when it is the only one, one line when it is one of a series.
void PrintJson(std::ostream& out, const nlohmann::json& json, bool series) {
  out << (series ? json.dump() : json.dump(2)) << "\n";
  out.flush();
}

// Prints `response` as JSON or as FormatX's text.
template <typename Response, typename Format>
absl::Status Print(std::ostream& out, const AdminOptions& options, const Response& response, Format format) {
  if (options.json) {
    ASSIGN_OR_RETURN(nlohmann::json json, ProtoToJson(response));
    PrintJson(out, json, false);
  } else {
    out << format(response);
    out.flush();
  }
  return absl::OkStatus();
}

FormatContext Context(const AdminOptions& options) { return {options.now(), options.zone}; }

bool Transient(const absl::Status& status) {
  return status.code() == absl::StatusCode::kUnavailable || status.code() == absl::StatusCode::kDeadlineExceeded;
}

absl::Status RunStatus(const AdminCommand& command, const AdminOptions& options, AdminClient& client, std::ostream& out,
                       std::ostream& err) {
  // With no NAME the server picks the job; the watch then stays on that job even if another
  // one starts after it.
  std::string name = command.args.empty() ? "" : command.args[0];
  bool printed = false;
  for (;;) {
    absl::StatusOr<v1::JobStatusResponse> response = client.GetJobStatus(name);
    if (!response.ok()) {
      // A watch outlives a server restart: after the first print, keep trying.
      if (!printed || !options.watch || !Transient(response.status())) return response.status();
      err << absl::StrFormat("fedprllm-admin: warning: %s: %s (trying again in %s)\n",
                             absl::StatusCodeToString(response.status().code()), response.status().message(),
                             absl::FormatDuration(options.interval));
      err.flush();
    } else {
      if (name.empty()) name = response->job().name();
      if (options.json) {
        ASSIGN_OR_RETURN(nlohmann::json json, JobStatusToJson(*response));
        PrintJson(out, json, options.watch);
      } else {
        if (options.clear_screen) out << "\033[H\033[2J";
        out << FormatJobStatus(*response, Context(options));
        out.flush();
      }
      printed = true;
      if (!JobIsActive(response->job().state())) return absl::OkStatus();
    }
    if (!options.watch || !options.sleep(options.interval)) return absl::OkStatus();
  }
}

absl::Status RunLogs(const AdminCommand& command, const AdminOptions& options, AdminClient& client, std::ostream& out) {
  v1::JobLogRequest request;
  request.set_name(command.args[0]);
  request.set_follow(options.follow);
  request.set_from_line(options.from_line);
  // Without --follow, --json gathers the stream into one document.
  v1::JobLogLines all;
  all.set_first_line(options.from_line);
  bool first = true;
  RETURN_IF_ERROR(client.StreamJobLog(request, [&](const v1::JobLogLines& lines) -> absl::Status {
    if (!options.json) {
      out << FormatLogLines(lines);
      out.flush();
    } else if (options.follow) {
      ASSIGN_OR_RETURN(nlohmann::json json, ProtoToJson(lines));
      PrintJson(out, json, true);
    } else {
      if (first) all.set_first_line(lines.first_line());
      for (const std::string& line : lines.lines()) all.add_lines(line);
    }
    first = false;
    return absl::OkStatus();
  }));
  if (options.json && !options.follow) {
    ASSIGN_OR_RETURN(nlohmann::json json, ProtoToJson(all));
    PrintJson(out, json, false);
  }
  return absl::OkStatus();
}

// Runs the command; *exit_code is set for outcomes that are not errors (health).
absl::Status Execute(const AdminCommand& command, const AdminOptions& options, AdminClient& client, std::ostream& out,
                     std::ostream& err, int* exit_code) {
  const std::string& name = command.name;
  if (name == "submit") {
    const std::string& path = command.args[0];
    ASSIGN_OR_RETURN(std::string text, ReadJobFile(path));
    ASSIGN_OR_RETURN(v1::SubmitJobResponse response, client.SubmitJob(text, path));
    return Print(out, options, response, FormatSubmit);
  }
  if (name == "jobs") {
    ASSIGN_OR_RETURN(v1::ListJobsResponse response, client.ListJobs());
    return Print(out, options, response, [&](const auto& r) { return FormatJobs(r, Context(options)); });
  }
  if (name == "status") return RunStatus(command, options, client, out, err);
  if (name == "abort") {
    ASSIGN_OR_RETURN(v1::AbortJobResponse response, client.AbortJob(command.args[0], options.reason));
    return Print(out, options, response, [&](const auto& r) { return FormatJobSummary(r.job(), Context(options)); });
  }
  if (name == "sites") {
    ASSIGN_OR_RETURN(v1::ListSitesResponse response, client.ListSites());
    return Print(out, options, response, FormatSites);
  }
  if (name == "logs") return RunLogs(command, options, client, out);
  if (name == "health") {
    ASSIGN_OR_RETURN(std::string serving, client.CheckHealth());
    if (options.json) {
      PrintJson(out, nlohmann::json{{"status", serving}}, false);
    } else {
      out << serving << "\n";
      out.flush();
    }
    *exit_code = serving == "SERVING" ? 0 : 1;
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown command '", name, "'"));
}

}  // namespace

absl::StatusOr<AdminCommand> ParseAdminCommand(const std::vector<std::string>& positional,
                                               const AdminOptions& options) {
  if (positional.empty()) return absl::InvalidArgumentError("no command given");
  const CommandSpec* spec = nullptr;
  for (const CommandSpec& c : kCommands) {
    if (positional[0] == c.name) spec = &c;
  }
  if (spec == nullptr) return absl::InvalidArgumentError(absl::StrCat("unknown command '", positional[0], "'"));
  AdminCommand command{spec->name, {positional.begin() + 1, positional.end()}};
  const int n = static_cast<int>(command.args.size());
  if (n < spec->min_args) {
    return absl::InvalidArgumentError(absl::StrCat("'", spec->name, "' needs an argument: ", spec->synopsis));
  }
  if (n > spec->max_args) {
    return absl::InvalidArgumentError(absl::StrCat("'", spec->name, "' takes ",
                                                   spec->max_args == 0 ? "no arguments" : "one argument", " (got '",
                                                   command.args[spec->max_args], "'): ", spec->synopsis));
  }
  if (n == 1 && command.args[0].empty()) {
    return absl::InvalidArgumentError(absl::StrCat("'", spec->name, "': the argument is empty: ", spec->synopsis));
  }
  const bool status = command.name == "status", logs = command.name == "logs", abort = command.name == "abort";
  if (options.watch && !status) return absl::InvalidArgumentError("--watch applies to 'status' only");
  if (options.follow && !logs) return absl::InvalidArgumentError("--follow applies to 'logs' only");
  if (options.from_line != 0 && !logs) return absl::InvalidArgumentError("--from_line applies to 'logs' only");
  if (!options.reason.empty() && !abort) return absl::InvalidArgumentError("--reason applies to 'abort' only");
  if (!(options.interval > absl::ZeroDuration() && options.interval <= absl::Hours(1))) {
    return absl::InvalidArgumentError(
        absl::StrCat("--interval must be in (0, 3600] seconds, got ", absl::ToDoubleSeconds(options.interval)));
  }
  if (options.from_line < 0) return absl::InvalidArgumentError("--from_line must be >= 0");
  return command;
}

absl::Status CheckFlagNames(int argc, char** argv) {
  static constexpr absl::string_view kBuiltinSwitches[] = {"help",        "helpfull", "helpshort",
                                                           "helppackage", "version",  "only_check_args"};
  static constexpr absl::string_view kBuiltinValued[] = {"helpon",  "helpmatch",  "flagfile",
                                                         "fromenv", "tryfromenv", "undefok"};
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") break;
    if (arg.size() < 2 || arg[0] != '-') continue;  // positional (or "-")
    absl::string_view name = arg.substr(arg[1] == '-' ? 2 : 1);
    const size_t eq = name.find('=');
    const bool has_value = eq != absl::string_view::npos;
    if (has_value) name = name.substr(0, eq);
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && absl::StartsWith(name, "no")) {
      flag = absl::FindCommandLineFlag(name.substr(2));
      if (flag != nullptr && (!flag->IsOfType<bool>() || has_value)) flag = nullptr;
    }
    // absl's own flags are registered only where its usage library is linked in.
    const bool builtin_switch = flag == nullptr && absl::c_linear_search(kBuiltinSwitches, name);
    const bool builtin_valued = flag == nullptr && absl::c_linear_search(kBuiltinValued, name);
    if (flag == nullptr && !builtin_switch && !builtin_valued) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
    const bool is_switch = flag != nullptr ? flag->IsOfType<bool>() : builtin_switch;
    if (!has_value && !is_switch) {
      if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat("flag --", name, " needs a value"));
      ++i;  // "--flag value"
    }
  }
  return absl::OkStatus();
}

int RunAdminCommand(const AdminCommand& command, const AdminOptions& options, AdminClient& client, std::ostream& out,
                    std::ostream& err) {
  int exit_code = 0;
  const absl::Status status = Execute(command, options, client, out, err, &exit_code);
  if (!status.ok()) {
    err << AdminErrorText(status);
    err.flush();
    return 1;
  }
  return exit_code;
}

std::string AdminErrorText(const absl::Status& status) {
  std::string text =
      absl::StrCat("fedprllm-admin: error: ", absl::StatusCodeToString(status.code()), ": ", status.message(), "\n");
  if (const auto hint = status.GetPayload(kAdminHintPayload)) {
    absl::StrAppend(&text, "fedprllm-admin: hint: ", std::string(*hint), "\n");
  }
  return text;
}

}  // namespace fedprllm
