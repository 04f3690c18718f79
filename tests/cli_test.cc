// Every binary's --help lists its own flags and --version names the project version, the git
// commit it was built from and the build type (common/command_line.h).
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "common/command_line.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fedprllm {
namespace {

using ::testing::HasSubstr;

std::string Output(const std::string& command) {
  std::string out;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return out;
  char buffer[4096];
  while (size_t n = std::fread(buffer, 1, sizeof(buffer), pipe)) out.append(buffer, n);
  ::pclose(pipe);
  return out;
}

// Each binary with one flag its --help must list.
const std::vector<std::pair<std::string, std::string>> kBinaries = {
    {FEDPRLLM_SERVER_BIN, "--config"},   {FEDPRLLM_CLIENT_BIN, "--config"},  {FEDPRLLM_PRUNE_BIN, "--metric"},
    {FEDPRLLM_EVAL_BIN, "--text"},       {FEDPRLLM_CONVERT_BIN, "--model"},  {FEDPRLLM_GENERATE_BIN, "--seed"},
    {FEDPRLLM_SIM_BIN, "--model"},       {FEDPRLLM_BENCH_BIN, "--seqlen"},   {FEDPRLLM_ADMIN_BIN, "--json"},
};

TEST(CommandLineTest, HelpListsTheProgramsOwnFlags) {
  for (const auto& [binary, flag] : kBinaries) {
    const std::string help = Output(binary + " --help");
    EXPECT_THAT(help, HasSubstr("Flags from")) << binary << ":\n" << help;
    EXPECT_THAT(help, HasSubstr(flag)) << binary << ":\n" << help;
    EXPECT_THAT(help, ::testing::Not(HasSubstr("No flags matched"))) << binary;
  }
}

TEST(CommandLineTest, VersionNamesVersionCommitAndBuildType) {
  for (const auto& [binary, flag] : kBinaries) {
    const std::string version = Output(binary + " --version");
    EXPECT_EQ(version, VersionString() + "\n") << binary;
  }
  EXPECT_THAT(VersionString(), HasSubstr(std::string("fedprllm ") + FEDPRLLM_PROJECT_VERSION + " (commit "));
  EXPECT_THAT(VersionString(), HasSubstr(std::string(", ") + FEDPRLLM_BUILD_TYPE + " build)"));
}

}  // namespace
}  // namespace fedprllm
