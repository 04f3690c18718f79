// absl flags usage configuration and the version line.
#include "common/command_line.h"

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/build_info.h"

namespace fedprllm {

std::string VersionString() {
  return absl::StrCat("fedprllm ", kBuildVersion, " (commit ", kBuildCommit, ", ", kBuildType, " build)");
}

std::vector<char*> ParseCommandLine(int argc, char** argv, const char* usage) {
  absl::SetProgramUsageMessage(usage);
  absl::FlagsUsageConfig config;
  // absl's default shows only flags of a file named like the binary; ours live in *_main.cc.
  auto own_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "_main.cc") || absl::EndsWith(file, "_bench.cc");
  };
  config.contains_help_flags = own_flags;
  config.contains_helpshort_flags = own_flags;
  config.version_string = [] { return VersionString() + "\n"; };
  absl::SetFlagsUsageConfig(config);
  return absl::ParseCommandLine(argc, argv);
}

}  // namespace fedprllm
