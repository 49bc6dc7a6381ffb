// A two-GPU node without a GPU, for tests only: Mesa's software Vulkan driver (lavapipe, Debian's
// mesa-vulkan-drivers) copied to two paths with one ICD manifest each gives two Vulkan physical devices,
// and node-llama-cpp's Vulkan prebuilt runs real llama.cpp kernels on them. They are CPU-type devices,
// which ggml skips unless GGML_VK_VISIBLE_DEVICES lists them — exactly what a machine with Mesa and no
// GPU looks like when the list is left out. This is a stand-in for real GPUs (named so), not a mock of
// rbee: every rbee process it touches is real.

import { copyFileSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { REPO_ROOT } from "./hive";

const LVP = "/usr/lib/x86_64-linux-gnu/libvulkan_lvp.so";

export interface SoftwareGpus {
  /** Environment that shows both devices to node-llama-cpp (test setup only: lavapipe must stay ignored on real machines). */
  visible: NodeJS.ProcessEnv;
  /** The same drivers with the devices left hidden, as on a server with Mesa installed and no GPU. */
  hidden: NodeJS.ProcessEnv;
}

export function softwareGpus(count = 2): SoftwareGpus {
  if (!existsSync(LVP)) throw new Error(`${LVP} is missing: install Debian's mesa-vulkan-drivers (.ci/run does)`);
  const dir = path.join(REPO_ROOT, ".cache", "lavapipe");
  mkdirSync(dir, { recursive: true });
  const manifests: string[] = [];
  for (let i = 0; i < count; i++) {
    const lib = path.join(dir, `lvp${i}.so`);
    if (!existsSync(lib)) copyFileSync(LVP, lib);
    const json = path.join(dir, `lvp${i}.json`);
    writeFileSync(
      json,
      JSON.stringify({ file_format_version: "1.0.0", ICD: { library_path: lib, api_version: "1.1.230" } }),
    );
    manifests.push(json);
  }
  const icd = { VK_ICD_FILENAMES: manifests.join(":") };
  return {
    visible: { ...icd, GGML_VK_VISIBLE_DEVICES: [...Array(count).keys()].join(",") },
    hidden: icd,
  };
}
