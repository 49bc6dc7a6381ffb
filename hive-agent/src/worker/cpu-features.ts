// The x86 instruction sets this CPU has, as ggml CMake options, for builds "native to this CPU"
// without GGML_NATIVE. GGML_NATIVE (-march=native) also turns on AMX when the CPU model has it,
// and on this VM the kernel does not enable AMX tiles: ggml's AMX kernels then die with SIGILL.
// Listing the sets explicitly (AMX always off) gives the same AVX-512/VNNI kernels without that trap.

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
  return new Set(line ? line.slice(line.indexOf(":") + 1).trim().split(/\s+/) : []);
}

/**
 * ggml CMake options (name → "ON"/"OFF") for this CPU, AMX off. On a CPU that is not x86 (no flags
 * line we know), returns only GGML_NATIVE=ON: -march=native is safe there.
 */
export function ggmlCpuOptions(flags = cpuFlags(), arch: string = process.arch): Record<string, "ON" | "OFF"> {
  if (arch !== "x64" || !flags.has("sse4_2")) return { GGML_NATIVE: "ON" };
  const options: Record<string, "ON" | "OFF"> = { GGML_NATIVE: "OFF" };
  for (const [flag, option] of FLAG_TO_OPTION) options[option] = flags.has(flag) ? "ON" : "OFF";
  options.GGML_AMX_TILE = "OFF";
  options.GGML_AMX_INT8 = "OFF";
  options.GGML_AMX_BF16 = "OFF";
  return options;
}
