#!/usr/bin/env bash
# Installs the llama.cpp peer used by tests and benchmarks (never by the product):
#  - peer/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libllama*.so (prebuilt CPU build)
#  - peer/llama.cpp/ : the llama.cpp source that node-llama-cpp ships as a git bundle, for
#    llama.h (struct layouts), the vocab-only GGUFs with their .inp/.out tokenizer vectors, and
#    the chat templates in models/templates.
# Idempotent: does nothing when both are present.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
version=3.22.1
if [ ! -f node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libllama.v0.5.0.so ]; then
  npm install --no-audit --no-fund --loglevel=error >/dev/null
fi
if [ ! -f llama.cpp/include/llama.h ]; then
  rm -rf llama.cpp pack && mkdir -p pack
  npm pack --silent --pack-destination pack "node-llama-cpp@$version" >/dev/null
  tar -xzf pack/node-llama-cpp-$version.tgz -C pack package/llama/gitRelease.bundle
  git clone --quiet pack/package/llama/gitRelease.bundle llama.cpp 2>/dev/null
  rm -rf pack
fi
echo "llama.cpp peer ready in $here"
