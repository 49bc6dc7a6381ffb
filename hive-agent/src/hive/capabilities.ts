// What a node can run: GPU backends, devices with VRAM, RAM. Detection loads native GPU libraries, so
// it runs in a child process (`hive-agent detect`): a driver that crashes cannot take the hive down.
//
// A GPU backend counts only when it has a usable device: Mesa's Vulkan drivers on a server without a
// GPU load fine but offer only CPU-type devices, which ggml skips; picking "vulkan" there would fail
// every spawn (docs/gpu-nodes.md).

import { execFile } from "node:child_process";
import { freemem, totalmem } from "node:os";
import { readFileSync } from "node:fs";
import { promisify } from "node:util";
import type { Backend, DeviceInfo, NodeHardware } from "../protocol";
import { usableCores } from "./usable-cores";

const run = promisify(execFile);

/** The variable that restricts (and pins) a backend's devices, as the worker's process takes it. */
export const DEVICE_ENV: Partial<Record<Backend, string>> = {
  cuda: "CUDA_VISIBLE_DEVICES",
  vulkan: "GGML_VK_VISIBLE_DEVICES",
};

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

/** A comma-separated device list from the environment (CUDA_VISIBLE_DEVICES…), or undefined when unset. */
export function visibleList(value: string | undefined): string[] | undefined {
  if (value === undefined || value.trim() === "") return undefined;
  return value
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
}

export interface NvidiaGpu {
  index: number;
  uuid: string;
  name: string;
  totalBytes: number;
  freeBytes: number;
}

/** Parses `nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.free --format=csv,noheader,nounits`. */
export function parseNvidiaSmi(stdout: string): NvidiaGpu[] {
  return stdout
    .trim()
    .split("\n")
    .filter(Boolean)
    .map((line) => {
      const [index, uuid, name, total, free] = line.split(",").map((s) => s.trim());
      return {
        index: Number(index),
        uuid,
        name,
        totalBytes: Number(total) * 2 ** 20,
        freeBytes: Number(free) * 2 ** 20,
      };
    });
}

/**
 * The NVIDIA GPUs this process may use, in CUDA's order, each with the id that pins a worker to it.
 * nvidia-smi lists every GPU in PCI bus order and ignores CUDA_VISIBLE_DEVICES, so a restriction the
 * node's admin set (indices or UUID prefixes, as CUDA takes them) is applied here; workers run with
 * CUDA_DEVICE_ORDER=PCI_BUS_ID so CUDA numbers GPUs as nvidia-smi does.
 */
export function cudaDevices(gpus: NvidiaGpu[], visible: string[] | undefined): DeviceInfo[] {
  const chosen = visible
    ? visible
        .map((id) => gpus.find((g) => (/^\d+$/.test(id) ? g.index === Number(id) : g.uuid.startsWith(id))))
        .filter((g): g is NvidiaGpu => !!g)
    : gpus;
  return chosen.map((g, index) => ({
    backend: "cuda",
    index,
    name: g.name,
    vram_total_bytes: g.totalBytes,
    vram_free_bytes: g.freeBytes,
    pin_id: String(g.index),
  }));
}

async function nvidiaSmi(): Promise<NvidiaGpu[]> {
  try {
    const { stdout } = await run(
      "nvidia-smi",
      ["--query-gpu=index,uuid,name,memory.total,memory.free", "--format=csv,noheader,nounits"],
      { timeout: 10_000 },
    );
    return parseNvidiaSmi(stdout);
  } catch {
    return [];
  }
}

/** What one backend's binary sees in this process: device names and their VRAM together. */
export interface BackendProbe {
  names: string[];
  total: number;
  free: number;
}

/**
 * Loads one backend's binary and asks what it sees. node-llama-cpp prints "prebuilt binary … is not
 * compatible" and similar lines straight to the console; they are collected into `notes` (the hive
 * logs them) instead of reaching the user's terminal.
 */
export async function probeBackend(
  gpu: "cuda" | "metal" | "vulkan",
  notes: string[],
): Promise<BackendProbe | undefined> {
  const nlc = await import("node-llama-cpp");
  return withConsoleCaptured(notes, async () => {
    try {
      const llama = await nlc.getLlama({
        gpu,
        build: "never",
        logLevel: nlc.LlamaLogLevel.disabled,
        skipDownload: true,
      });
      try {
        if (llama.gpu !== gpu) return undefined;
        const names = await llama.getGpuDeviceNames();
        const vram = await llama.getVramState();
        return { names, total: vram.total, free: vram.free };
      } finally {
        await llama.dispose();
      }
    } catch (e) {
      notes.push(`${gpu}: ${(e as Error).message}`);
      return undefined;
    }
  });
}

async function withConsoleCaptured<T>(notes: string[], fn: () => Promise<T>): Promise<T> {
  const saved = { log: console.log, info: console.info, warn: console.warn, error: console.error };
  const capture = (...args: unknown[]) => void notes.push(args.map(String).join(" "));
  Object.assign(console, { log: capture, info: capture, warn: capture, error: capture });
  try {
    return await fn();
  } finally {
    Object.assign(console, saved);
  }
}

/** Runs a probe of one backend in a child process restricted to one device (exact per-device VRAM). */
export type DeviceProber = (gpu: "vulkan", pinId: string) => Promise<BackendProbe | undefined>;

/**
 * Vulkan devices with the id that pins a worker to each. node-llama-cpp reports the VRAM of all
 * devices together, so with several devices each is probed alone (GGML_VK_VISIBLE_DEVICES=<id>) for its
 * own name and VRAM. ggml numbers Vulkan devices by the driver's enumeration, in which it skips CPU-type
 * ones unless they are listed: with no list, ids are found by probing 0, 1, … and matching names in
 * order; a listed id that is a CPU device (lavapipe in tests) stays usable, as the list asks.
 */
export async function vulkanDevices(
  all: BackendProbe,
  visible: string[] | undefined,
  probe: DeviceProber,
): Promise<DeviceInfo[]> {
  const even = (name: string, index: number, pin: string | undefined): DeviceInfo => ({
    backend: "vulkan",
    index,
    name,
    vram_total_bytes: Math.floor(all.total / all.names.length),
    vram_free_bytes: Math.floor(all.free / all.names.length),
    ...(pin !== undefined ? { pin_id: pin } : {}),
  });
  if (all.names.length === 1) return [even(all.names[0], 0, visible?.[0])];
  const pins: string[] = [];
  // Each device is probed once: what the id matching saw is reused for the device's own figures.
  const seen = new Map<string, BackendProbe | undefined>();
  const probeOnce = async (id: string) =>
    seen.has(id) ? seen.get(id) : (seen.set(id, await probe("vulkan", id)), seen.get(id));
  if (visible) pins.push(...visible.slice(0, all.names.length));
  else {
    // Match the default device list to driver ids: the list keeps the driver's order.
    let next = 0;
    for (let id = 0; id < 16 && next < all.names.length; id++) {
      const one = await probeOnce(String(id));
      if (!one || !one.names.length) break;
      if (one.names[0] === all.names[next]) {
        pins.push(String(id));
        next++;
      }
    }
  }
  if (pins.length !== all.names.length) return all.names.map((n, i) => even(n, i, undefined));
  const out: DeviceInfo[] = [];
  for (const [index, pin] of pins.entries()) {
    const one = await probeOnce(pin);
    if (one && one.names.length === 1)
      out.push({
        backend: "vulkan",
        index,
        name: one.names[0],
        vram_total_bytes: one.total,
        vram_free_bytes: one.free,
        pin_id: pin,
      });
    else out.push(even(all.names[index], index, pin));
  }
  return out;
}

/** Runs in the `detect` child: asks node-llama-cpp which GPU backends have usable devices here. */
export async function detectCapabilities(probeDevice: DeviceProber, notes: string[] = []): Promise<NodeHardware> {
  const backends: Backend[] = [];
  const devices: DeviceInfo[] = [];
  for (const gpu of ["cuda", "metal", "vulkan"] as const) {
    const seen = await probeBackend(gpu, notes);
    if (!seen) continue;
    let found: DeviceInfo[];
    if (gpu === "cuda") {
      const visible = visibleList(process.env.CUDA_VISIBLE_DEVICES);
      const smi = cudaDevices(await nvidiaSmi(), visible);
      found = smi.length
        ? smi
        : seen.names.map((name, index) => ({
            backend: "cuda" as const,
            index,
            name,
            vram_total_bytes: Math.floor(seen.total / seen.names.length),
            vram_free_bytes: Math.floor(seen.free / seen.names.length),
            ...(visible?.[index] !== undefined ? { pin_id: visible[index] } : {}),
          }));
    } else if (gpu === "vulkan") {
      found = seen.names.length
        ? await vulkanDevices(seen, visibleList(process.env.GGML_VK_VISIBLE_DEVICES), probeDevice)
        : [];
    } else {
      found = seen.names.map((name, index) => ({
        backend: gpu,
        index,
        name,
        vram_total_bytes: seen.total,
        vram_free_bytes: seen.free,
      }));
    }
    if (!found.length) {
      notes.push(`${gpu}: the backend loads but offers no usable device; not used`);
      continue;
    }
    backends.push(gpu);
    devices.push(...found);
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

/** The backend a spawn uses when none is asked for: the fastest one with a usable device. */
export function bestBackend(caps: NodeHardware): Backend {
  for (const b of ["cuda", "metal", "vulkan"] as const)
    if (caps.backends.includes(b) && caps.devices.some((d) => d.backend === b)) return b;
  return "cpu";
}
