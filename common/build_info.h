// What the binary was built from, written at build time by common/build_info.cmake into
// build/common/build_info.cc.
#pragma once

namespace fedprllm {

extern const char kBuildVersion[];  // the CMake project version, e.g. "0.3.0"
extern const char kBuildCommit[];   // short git commit, "-dirty" appended if the tree was; "unknown" outside git
extern const char kBuildType[];     // CMAKE_BUILD_TYPE

}  // namespace fedprllm
