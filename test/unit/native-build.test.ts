// The native-build helpers a worker relies on: CMake options for this CPU (AMX where it has it, OpenMP on)
// and the fallback to node-llama-cpp's prebuilt whenever no usable native build is in the folder.
// The build itself takes minutes, so it is exercised by the bench study, not here.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { cpuFlags, ggmlCpuOptions } from "../../hive-agent/src/worker/cpu-features";
import { loadLlama, nativeCmakeOptions, nativeEntry } from "../../hive-agent/src/worker/native-build";

const SAPPHIRE_RAPIDS =
  "processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 bmi2 fma f16c avx512f avx512vbmi avx512_vnni avx512_bf16 avx_vnni amx_tile amx_int8 amx_bf16\n";
const HASWELL = "processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 bmi2 fma f16c\n";

test("cpuFlags reads the flags line of /proc/cpuinfo", () => {
  const flags = cpuFlags(SAPPHIRE_RAPIDS);
  assert.ok(flags.has("avx512f") && flags.has("amx_tile") && flags.has("fma"));
  assert.equal(cpuFlags("processor\t: 0\n").size, 0);
});

test("ggml options list the CPU's instruction sets; AMX where the CPU has it, with dead-store elimination off", () => {
  const spr = ggmlCpuOptions(cpuFlags(SAPPHIRE_RAPIDS), "x64");
  assert.equal(spr.GGML_NATIVE, "OFF");
  for (const o of [
    "GGML_AVX",
    "GGML_AVX2",
    "GGML_FMA",
    "GGML_F16C",
    "GGML_AVX512",
    "GGML_AVX512_VBMI",
    "GGML_AVX512_VNNI",
    "GGML_AVX512_BF16",
    "GGML_AVX_VNNI",
  ]) {
    assert.equal(spr[o], "ON", o);
  }
  for (const o of ["GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16"]) assert.equal(spr[o], "ON", o);
  // Without these GCC 12 drops the tile configuration's stores and the AMX kernels die with SIGILL.
  for (const o of ["CMAKE_C_FLAGS_RELEASE", "CMAKE_CXX_FLAGS_RELEASE"])
    assert.match(spr[o], /^-O3 -DNDEBUG -fno-tree-dse -fno-dse$/, o);

  const hsw = ggmlCpuOptions(cpuFlags(HASWELL), "x64");
  assert.equal(hsw.GGML_AVX2, "ON");
  assert.equal(hsw.GGML_AVX512, "OFF");
  assert.equal(hsw.GGML_AVX512_VNNI, "OFF");
  for (const o of ["GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16"]) assert.equal(hsw[o], "OFF", o);
  assert.equal(hsw.CMAKE_CXX_FLAGS_RELEASE, undefined, "no workaround flags without AMX");

  // Elsewhere (arm64…) -march=native says it all.
  assert.deepEqual(ggmlCpuOptions(cpuFlags(HASWELL), "arm64"), { GGML_NATIVE: "ON" });
});

test("the native build asks for OpenMP (persistent threads instead of a new thread per token)", () => {
  assert.equal(nativeCmakeOptions(cpuFlags(HASWELL)).GGML_OPENMP, "ON");
});

test("loadLlama falls back to the prebuilt when the folder holds no native build, and says why", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "rbee-native-"));
  try {
    const none = await loadLlama({ threads: 2 });
    assert.equal(none.kind, "prebuilt");
    assert.equal(none.fallbackReason, undefined);
    assert.equal(none.llama.buildType, "prebuilt");
    await none.llama.dispose();

    const one = await loadLlama({ dir, threads: 1 });
    assert.equal(one.kind, "prebuilt");
    assert.match(one.fallbackReason ?? "", /one thread/);
    await one.llama.dispose();

    const empty = await loadLlama({ dir, threads: 2 });
    assert.equal(empty.kind, "prebuilt");
    assert.match(empty.fallbackReason ?? "", /no native build/);
    await empty.llama.dispose();

    // A build stamped for another node-llama-cpp version (an agent upgrade) is not used.
    mkdirSync(path.dirname(nativeEntry(dir)), { recursive: true });
    writeFileSync(nativeEntry(dir), "export {};\n");
    writeFileSync(
      path.join(dir, "rbee-native-build.json"),
      JSON.stringify({ version: "0.0.1", cmakeOptions: { GGML_OPENMP: "ON" }, cpu: "x" }),
    );
    const stale = await loadLlama({ dir, threads: 2 });
    assert.equal(stale.kind, "prebuilt");
    assert.match(stale.fallbackReason ?? "", /another node-llama-cpp version or CPU/);
    await stale.llama.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
