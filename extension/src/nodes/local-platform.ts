// This machine as a runtime platform (for the local hive): OS, CPU, libc and the GPUs its
// node-llama-cpp prebuilts can use. The same questions the deploy probe asks a node over SSH, asked
// with local programs (no shell, so it works on Windows too).

import { execFile } from "node:child_process";
import type { GpuKind, NodePlatform } from "./runtime-packages";

function run(cmd: string, args: string[]): Promise<{ ok: boolean; out: string }> {
  return new Promise((resolve) => {
    // vulkaninfo can hang on broken drivers: bounded.
    execFile(cmd, args, { timeout: 20_000, windowsHide: true }, (err, stdout, stderr) =>
      resolve({ ok: !err, out: `${stdout}${stderr}` }),
    );
  });
}

export async function detectLocalPlatform(): Promise<NodePlatform> {
  const gpus: GpuKind[] = [];
  if (process.platform === "darwin" && process.arch === "arm64") gpus.push("metal");
  else {
    if ((await run("nvidia-smi", ["-L"])).ok) gpus.push("cuda");
    // A software Vulkan device (Mesa's lavapipe) is not a GPU: only real device types count, unless
    // GGML_VK_VISIBLE_DEVICES lists devices, which makes ggml use even CPU-type ones.
    const vk = await run("vulkaninfo", ["--summary"]);
    const types = process.env.GGML_VK_VISIBLE_DEVICES
      ? "DISCRETE_GPU|INTEGRATED_GPU|VIRTUAL_GPU|CPU"
      : "DISCRETE_GPU|INTEGRATED_GPU|VIRTUAL_GPU";
    if (vk.ok && new RegExp(`deviceType\\s*=\\s*PHYSICAL_DEVICE_TYPE_(${types})`).test(vk.out)) gpus.push("vulkan");
  }
  const report = process.report?.getReport?.() as { header?: { glibcVersionRuntime?: string } } | undefined;
  const glibc = report?.header?.glibcVersionRuntime;
  const machine =
    { x64: "x86_64", arm64: process.platform === "darwin" ? "arm64" : "aarch64", arm: "armv7l" }[
      process.arch as string
    ] ?? process.arch;
  return { os: process.platform, machine, musl: process.platform === "linux" && !glibc, glibc, gpus };
}
