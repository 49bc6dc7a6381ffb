#!/usr/bin/env bash
# Packs what the CUDA check needs into .devkit/ (git-ignored), for a GPU machine that has CUDA, CMake
# and ninja but no Node.js and no registry: node itself, node-llama-cpp and its runtime dependencies
# (without prebuilt GPU binaries: the CUDA one alone is 150 MB), the part of llama.cpp's source the
# addon builds from, the N-API headers cmake-js wants, the bundles, and the tokenizer for the model.
set -euo pipefail
cd "$(dirname "$0")/../../.."
KIT=.devkit
rm -rf "$KIT" && mkdir -p "$KIT/headers" "$KIT/models"
node esbuild.mjs
npx esbuild test/bench/cuda/device-bench.ts --bundle --platform=node --target=node20 --format=cjs \
  --external:node-llama-cpp --external:'*.node' --outfile="$KIT/device-bench.js" --log-level=warning
cp dist/hive-agent.js "$KIT/"
node --import tsx -e 'require("./test/fixtures/models").vocabFile("deepseek-coder")'
cp .cache/models/ggml-vocab-deepseek-coder.gguf "$KIT/models/"
for h in node.h node_api.h node_api_types.h js_native_api.h js_native_api_types.h node_version.h; do cp "/usr/include/node/$h" "$KIT/headers/"; done
xz -T2 -4 -c "$(readlink -f "$(command -v node)")" > "$KIT/node.xz"
# node-llama-cpp's runtime closure, plus the llama.cpp sources its CMake build reads.
mapfile -t pkgs < <(node --import tsx -e '
  const r = require("./extension/src/nodes/runtime-packages");
  for (const p of r.runtimeClosure(require("path").resolve("node_modules"), [])) console.log(p);')
src=node-llama-cpp/llama/llama.cpp
tar -C node_modules -cJf "$KIT/nm.tar.xz" \
  --exclude=node-llama-cpp/llama/gitRelease.bundle --exclude=node-llama-cpp/llama/localBuilds --exclude="$src" "${pkgs[@]}"
tar -C node_modules -cJf "$KIT/llama-src.tar.xz" \
  "$src/CMakeLists.txt" "$src/LICENSE" "$src/cmake" "$src/ggml" "$src/src" "$src/include" "$src/common" "$src/vendor" "$src/licenses" "$src/tools"
du -sh "$KIT" "$KIT"/*
