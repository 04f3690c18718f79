#!/usr/bin/env bash
# Installs, with apt-get, every Debian 12 package FedPrLLM needs to build, test, package
# (cpack needs `file`) and run.
# Does nothing when all are present. Needs root (or sudo) only when something is missing.
# INSTALL_DEPS_EXCLUDE="pkg ..." leaves those out (docker/Dockerfile.client-cuda: libtorch-dev).
set -euo pipefail

PACKAGES=(
  build-essential cmake git pkg-config ccache file
  libtorch-dev libopenblas0-pthread
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libyaml-cpp-dev libssl-dev openssl
  libgtest-dev libgmock-dev
  nlohmann-json3-dev libspdlog-dev libzstd-dev libsentencepiece-dev
  prometheus-cpp-dev
  gnuplot-nox
  strace                 # tests/pki_test.sh traces the files fedprllm-certs sign opens
  python3-yaml           # scripts/validate_k8s.py (ctest k8s_manifests_test)
  python3-numpy          # tests/reference_forward.py, the independent forward pass
  libpcre2-dev           # tokenizer.json pre-tokenizer regexes (\p{L}, \p{N})
  libicu-dev             # tokenizer.json NFC/NFKC normalizers (Qwen2), model/unicode_normalizer.h
)

missing=()
for p in "${PACKAGES[@]}"; do
  case " ${INSTALL_DEPS_EXCLUDE:-} " in *" $p "*) continue ;; esac
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install_deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
