#!/usr/bin/env bash
# Runs on the GPU machine, in the repo root with .devkit/ carried: unpacks node and node-llama-cpp,
# builds node-llama-cpp's llama.cpp with CUDA for this GPU only (node-llama-cpp's own `source build`),
# then runs the CUDA check (device-bench.js). Results go to $OUT.
set -uo pipefail
KIT=$PWD/.devkit
W=/tmp/rbee-gpu
OUT=${OUT:-/tmp/rbee-gpu-out}
mkdir -p "$W/bin" "$W/models" "$OUT"
xz -dc "$KIT/node.xz" > "$W/bin/node" && chmod +x "$W/bin/node"
export PATH="$W/bin:$PATH"
# node-llama-cpp's source build calls `npm run -s cmake-js-llama -- …` (= cd llama && cmake-js …);
# the GPU machine has no npm, so a stand-in runs exactly that and nothing else.
cat > "$W/bin/npm" <<SHIM
#!/bin/sh
[ "\$1 \$2 \$3 \$4" = "run -s cmake-js-llama --" ] || { echo "npm stand-in: unsupported: \$*" >&2; exit 1; }
shift 4
cd "$W/node_modules/node-llama-cpp/llama" && exec node "$W/node_modules/cmake-js/bin/cmake-js" "\$@"
SHIM
chmod +x "$W/bin/npm"
mkdir -p "$W/node_modules"
tar -C "$W/node_modules" -xJf "$KIT/nm.tar.xz"
tar -C "$W/node_modules" -xJf "$KIT/llama-src.tar.xz"
mkdir -p "$W/node_modules/node-llama-cpp/llama/llama.cpp/.git"
hdr="$HOME/.cmake-js/node-x64/$(node -p process.version)/include/node"
mkdir -p "$hdr" && cp "$KIT"/headers/* "$hdr/"
cp "$KIT"/*.js "$W/" && cp "$KIT"/models/* "$W/models/"
nvidia-smi --query-gpu=index,name,memory.total,memory.free,compute_cap --format=csv | tee "$OUT/nvidia-smi.txt"
cd "$W"
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d .)
start=$(date +%s)
GPU=${RBEE_KIT_GPU:-cuda}  # "false" builds for the CPU: a dry run of this script on a machine without a GPU
# Exported for everything after, not only the build: node-llama-cpp names a local build's folder after
# its CMake options and reads these variables again in getLlama(). Set only for the build (as a first
# run did), every later getLlama({ gpu: "cuda", build: "never" }) looked for another folder, found no
# CUDA binary, and the hive reported only "cpu".
export NODE_LLAMA_CPP_CMAKE_OPTION_CMAKE_CUDA_ARCHITECTURES="$arch" NODE_LLAMA_CPP_CMAKE_OPTION_GGML_NATIVE=OFF
node node_modules/node-llama-cpp/dist/cli/cli.js source build --gpu "$GPU" --noUsageExample > "$OUT/build.log" 2>&1
echo "build exit $? in $(( $(date +%s) - start )) s" | tee -a "$OUT/build.log"
tail -5 "$OUT/build.log"
ls node_modules/node-llama-cpp/llama/localBuilds/ | tee "$OUT/local-builds.txt"
# The same load the hive's detection and a CUDA worker make, alone and time-limited, with its logs.
# From a file: node-llama-cpp tests a binary in a fork that inherits execArgv, and a forked `node -e`
# runs the script again instead (that is what "hung" in the first run's by-hand check).
cat > "$W/probe.mjs" <<'PROBE'
const { getLlama, LlamaLogLevel } = await import("./node_modules/node-llama-cpp/dist/index.js");
const t0 = Date.now();
const llama = await getLlama({ gpu: process.argv[2] === "false" ? false : process.argv[2], build: "never", skipDownload: true, logLevel: LlamaLogLevel.debug });
console.log(JSON.stringify({ gpu: llama.gpu, buildType: llama.buildType, devices: await llama.getGpuDeviceNames(), vram: await llama.getVramState(), ms: Date.now() - t0 }));
process.exit(0);
PROBE
timeout 90 node "$W/probe.mjs" "$GPU" > "$OUT/probe.txt" 2>&1
echo "probe exit $?" | tee -a "$OUT/probe.txt"
tail -3 "$OUT/probe.txt"
UV_THREADPOOL_SIZE=1 RBEE_AGENT_SCRIPT="$W/hive-agent.js" RBEE_MODEL_CACHE="$W/models" timeout 180 node "$W/device-bench.js" 2>"$OUT/bench.err" | tee "$OUT/result.json"
tail -20 "$OUT/bench.err"
