// What a node can run: GPU backends, devices with VRAM, RAM. Detection loads native GPU libraries, so
// it runs in a child process (`hive-agent detect`): a driver that crashes cannot take the hive down.

import { execFile } from "node:child_process";
import { freemem, totalmem } from "node:os";
import { readFileSync } from "node:fs";
import { promisify } from "node:util";
import type { Backend, DeviceInfo, NodeHardware } from "../protocol";
import { usableCores } from "./usable-cores";

const run = promisify(execFile);

/** MemAvailable (what can be used without swapping) where Linux tells it; os.freemem() elsewhere. */
export function availableRam(): number {
  try {
    const m = /MemAvailable:\s+(\d+) kB/.exec(readFileSync("/proc/meminfo", "utf8"));
    if (m) return Number(m[1]) * 1024;
  } catch {
    // not Linux
  }
  return freemem();
}

/** NVIDIA GPUs with exact per-device VRAM, from nvidia-smi when it is installed. */
async function nvidiaDevices(): Promise<DeviceInfo[]> {
  try {
    const { stdout } = await run("nvidia-smi", ["--query-gpu=index,name,memory.total,memory.free", "--format=csv,noheader,nounits"], { timeout: 10_000 });
    return stdout
      .trim()
      .split("\n")
      .filter(Boolean)
      .map((line) => {
        const [index, name, total, free] = line.split(",").map((s) => s.trim());
        return { backend: "cuda" as const, index: Number(index), name, vram_total_bytes: Number(total) * 2 ** 20, vram_free_bytes: Number(free) * 2 ** 20 };
      });
  } catch {
    return [];
  }
}

/** Runs in the `detect` child: asks node-llama-cpp which GPU backends load here and what they see. */
export async function detectCapabilities(): Promise<NodeHardware> {
  const nlc = await import("node-llama-cpp");
  const backends: Backend[] = [];
  const devices: DeviceInfo[] = [];
  const nvidia = await nvidiaDevices();
  for (const gpu of ["cuda", "metal", "vulkan"] as const) {
    try {
      const llama = await nlc.getLlama({ gpu, build: "never", logLevel: nlc.LlamaLogLevel.disabled, skipDownload: true });
      if (llama.gpu !== gpu) continue;
      const names = await llama.getGpuDeviceNames();
      const vram = await llama.getVramState();
      await llama.dispose();
      // A backend that loads but sees no device (Vulkan over Mesa's CPU-only lavapipe/llvmpipe, which
      // ggml skips) cannot run a worker: listing it would make it the default and fail every spawn.
      if (names.length === 0) continue;
      backends.push(gpu);
      if (gpu === "cuda" && nvidia.length) devices.push(...nvidia);
      else
        names.forEach((name, index) =>
          // node-llama-cpp reports VRAM for all devices of a backend together; with several devices
          // each gets an even share, which is what a worker pinned to one of them can expect.
          devices.push({ backend: gpu, index, name, vram_total_bytes: Math.floor(vram.total / names.length), vram_free_bytes: Math.floor(vram.free / names.length) }),
        );
    } catch {
      // This backend's binaries or driver are not usable on this node.
    }
  }
  backends.push("cpu");
  return {
    backends,
    devices,
    ram_total_bytes: totalmem(),
    ram_free_bytes: availableRam(),
    cpu_cores: usableCores(),
    platform: process.platform,
    arch: process.arch,
  };
}

/** The backend a spawn uses when none is asked for: the fastest one this node has. */
export function bestBackend(caps: NodeHardware): Backend {
  for (const b of ["cuda", "metal", "vulkan"] as const) if (caps.backends.includes(b)) return b;
  return "cpu";
}
