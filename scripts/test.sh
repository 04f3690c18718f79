#!/usr/bin/env bash
# README command 2: installs what is missing (apt-get), builds everything and runs the
# whole test suite with CTest. Needs ../shared/data beside the checkout for the data tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
export CCACHE_BASEDIR="$(pwd)"
export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
export CCACHE_MAXSIZE=5G
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j"$(nproc)"
ctest --test-dir build --output-on-failure -j"$(nproc)"
