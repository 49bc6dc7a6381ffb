// The x86 instruction sets this CPU has, as ggml CMake options, for builds "native to this CPU",
// listed one by one instead of GGML_NATIVE (-march=native) so the build says what it turned on.
//
// AMX (Sapphire Rapids and later: ~1.3x on q8_0 here) needs a compiler workaround. GCC 12's
// `_tile_loadconfig` (amxtileintrin.h) declares an 8-byte memory operand for the 64-byte tile
// configuration, so -O3 deletes the stores that fill in its rows and columns as dead: ggml's AMX
// kernels then load a half-written configuration and die with SIGILL at `tilezero`, or compute with
// whatever the stack held. With dead-store elimination off (-fno-tree-dse -fno-dse) the stores stay,
// and the build gives the same tokens as node-llama-cpp's prebuilt AMX variant (built with GCC 11).
// Where the OS does not enable AMX, ggml asks for it at run time and falls back by itself.

import { readFileSync } from "node:fs";

/** /proc/cpuinfo flag → ggml CMake option. */
const FLAG_TO_OPTION: ReadonlyArray<readonly [string, string]> = [
  ["avx", "GGML_AVX"],
  ["avx2", "GGML_AVX2"],
  ["bmi2", "GGML_BMI2"],
  ["fma", "GGML_FMA"],
  ["f16c", "GGML_F16C"],
  ["avx_vnni", "GGML_AVX_VNNI"],
  ["avx512f", "GGML_AVX512"],
  ["avx512vbmi", "GGML_AVX512_VBMI"],
  ["avx512_vnni", "GGML_AVX512_VNNI"],
  ["avx512_bf16", "GGML_AVX512_BF16"],
];

export function cpuFlags(cpuinfo = readFileSync("/proc/cpuinfo", "utf8")): Set<string> {
  const line = cpuinfo.split("\n").find((l) => l.startsWith("flags"));
  return new Set(
    line
      ? line
          .slice(line.indexOf(":") + 1)
          .trim()
          .split(/\s+/)
      : [],
  );
}

/** Release flags for a build with AMX: CMake's defaults plus the GCC workaround above. */
export const AMX_RELEASE_FLAGS = "-O3 -DNDEBUG -fno-tree-dse -fno-dse";

/**
 * ggml CMake options for this CPU: its instruction sets, AMX where it has it (with the compiler
 * workaround above). On a CPU that is not x86 (no flags line we know), returns only GGML_NATIVE=ON.
 */
export function ggmlCpuOptions(flags = cpuFlags(), arch: string = process.arch): Record<string, string> {
  if (arch !== "x64" || !flags.has("sse4_2")) return { GGML_NATIVE: "ON" };
  const options: Record<string, string> = { GGML_NATIVE: "OFF" };
  for (const [flag, option] of FLAG_TO_OPTION) options[option] = flags.has(flag) ? "ON" : "OFF";
  const amx = flags.has("amx_tile") && flags.has("amx_int8") && flags.has("avx512_vnni");
  options.GGML_AMX_TILE = amx ? "ON" : "OFF";
  options.GGML_AMX_INT8 = amx ? "ON" : "OFF";
  options.GGML_AMX_BF16 = amx && flags.has("amx_bf16") ? "ON" : "OFF";
  if (amx) {
    options.CMAKE_C_FLAGS_RELEASE = AMX_RELEASE_FLAGS;
    options.CMAKE_CXX_FLAGS_RELEASE = AMX_RELEASE_FLAGS;
  }
  return options;
}
