// Flag parsing shared by every FedPrLLM binary: `--help` lists all of the program's own
// flags (those defined in its *_main.cc or *_bench.cc), and `--version` prints the project
// version, the git commit the binary was built from and the build type.
//
//   int main(int argc, char** argv) {
//     fedprllm::ParseCommandLine(argc, argv, "fedprllm-server --config server.yaml");
#pragma once

#include <string>
#include <vector>

namespace fedprllm {

// "fedprllm 0.3.0 (commit 1a2b3c4d5e6f, RelWithDebInfo build)"; the commit gets "-dirty"
// when the tree had uncommitted changes to tracked files at build time.
std::string VersionString();

// Sets the usage message and the flags' help and version behaviour, then parses argv
// (absl::ParseCommandLine: exits on --help, --version or a bad flag). Returns the
// positional arguments, argv[0] first (flags and positional arguments may be interleaved;
// everything after "--" is positional).
std::vector<char*> ParseCommandLine(int argc, char** argv, const char* usage);

}  // namespace fedprllm
