// Builds node-llama-cpp's llama.cpp for this CPU with buildNativeLlama, into .cache/nlc-native-<variant>,
// for the study (study.ts picks these folders up). Minutes on 2 cores; a finished build is reused.
//   omp      what a worker would use: OpenMP on, this CPU's instruction sets (AMX where it has it)
//   noomp    the same without OpenMP (ggml's own thread pool), to tell the two apart
//   omp-noamx  AMX off, to measure what AMX brings
// Run: node --import tsx test/bench/build-native.ts omp

import path from "node:path";
import { buildNativeLlama, nativeCmakeOptions } from "../../hive-agent/src/worker/native-build";

const VARIANTS: Record<string, Record<string, string>> = {
  omp: {},
  noomp: { GGML_OPENMP: "OFF" },
  "omp-noamx": { GGML_AMX_TILE: "OFF", GGML_AMX_INT8: "OFF", GGML_AMX_BF16: "OFF" },
};

async function main() {
  const variant = process.argv[2] ?? "omp";
  if (!(variant in VARIANTS))
    throw new Error(`unknown variant "${variant}"; choose ${Object.keys(VARIANTS).join(", ")}`);
  const dir = path.resolve(__dirname, "..", "..", ".cache", `nlc-native-${variant}`);
  const result = await buildNativeLlama({
    dir,
    cmakeOptions: { ...nativeCmakeOptions(), ...VARIANTS[variant] },
    log: (line) => console.log(line),
  });
  console.log(JSON.stringify(result, null, 2));
  if (!result.ok) process.exit(1);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
