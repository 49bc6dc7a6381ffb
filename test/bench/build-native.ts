// Builds node-llama-cpp's llama.cpp for this CPU with buildNativeLlama, into .cache/nlc-native-<variant>,
// for the study (study.ts picks these folders up). Minutes on 2 cores; a finished build is reused.
//   omp      what a worker would use: OpenMP on, this CPU's instruction sets, AMX off
//   noomp    the same without OpenMP (ggml's own thread pool), to tell the two apart
//   omp-amx  AMX on as well: dies with SIGILL in tinygemm_kernel_amx (tilezero) on this VM
// Run: node --import tsx test/bench/build-native.ts omp

import path from "node:path";
import { buildNativeLlama, nativeCmakeOptions } from "../../hive-agent/src/worker/native-build";

const VARIANTS: Record<string, Record<string, string>> = {
  omp: {},
  noomp: { GGML_OPENMP: "OFF" },
  "omp-amx": { GGML_AMX_TILE: "ON", GGML_AMX_INT8: "ON", GGML_AMX_BF16: "ON" },
};

async function main() {
  const variant = process.argv[2] ?? "omp";
  if (!(variant in VARIANTS)) throw new Error(`unknown variant "${variant}"; choose ${Object.keys(VARIANTS).join(", ")}`);
  const dir = path.resolve(__dirname, "..", "..", ".cache", `nlc-native-${variant}`);
  const result = await buildNativeLlama({ dir, cmakeOptions: { ...nativeCmakeOptions(), ...VARIANTS[variant] }, log: (line) => console.log(line) });
  console.log(JSON.stringify(result, null, 2));
  if (!result.ok) process.exit(1);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
