// The main of every fuzz target when FEDPRLLM_LIBFUZZER is OFF (gcc builds, CI): runs
// LLVMFuzzerTestOneInput once on every file named on the command line, descending into
// directories, in sorted order. Arguments starting with '-' (libFuzzer flags such as -runs=0)
// are ignored, so CTest can run the same command line against either build. Exits 1 when no
// input was run or a path cannot be read; a crashing input crashes it, as under libFuzzer.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

namespace fs = std::filesystem;

// Appends the regular files at or under `path` to `files`; false if it does not exist.
bool CollectInputs(const fs::path& path, std::vector<fs::path>* files) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    for (const auto& entry : fs::recursive_directory_iterator(path, ec)) {
      if (entry.is_regular_file(ec)) files->push_back(entry.path());
    }
    return !ec;
  }
  if (fs::is_regular_file(path, ec)) {
    files->push_back(path);
    return true;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<fs::path> files;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.empty() || arg[0] == '-') continue;
    if (!CollectInputs(arg, &files)) {
      std::fprintf(stderr, "%s: cannot read %s\n", argv[0], arg.c_str());
      return 1;
    }
  }
  std::sort(files.begin(), files.end());
  size_t ran = 0;
  for (const fs::path& file : files) {
    std::ifstream in(file, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "%s: cannot open %s\n", argv[0], file.c_str());
      return 1;
    }
    const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    ++ran;
  }
  std::printf("%s: ran %zu inputs\n", argv[0], ran);
  if (ran == 0) {
    std::fprintf(stderr, "%s: no inputs given (name files or directories)\n", argv[0]);
    return 1;
  }
  return 0;
}
