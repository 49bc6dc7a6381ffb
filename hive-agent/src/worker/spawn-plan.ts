// What the hive hands a worker process: the spawn plan (model, backend, placement, threads, binary)
// and the line the worker announces its address with. The hive's supervisor and the worker's main
// both import this module, and neither imports the other.

import type { Backend, DecodeBatching } from "../protocol";
import type { CpuBinary } from "./native-build";

/** The line a worker prints once it listens; the hive reads the address from it. */
export const LISTENING_PREFIX = "RBEE_WORKER_LISTENING ";

/** Where a worker runs and what it holds there (hive/placement.ts decides it). */
export interface WorkerPlacement {
  /** Device indices within the backend; empty on the CPU. */
  devices: number[];
  /** The device variable's value for each device (DeviceInfo.pin_id); undefined where no pin is needed. */
  pins: (string | undefined)[];
  /** Bytes reserved on each device (on the CPU: one entry, RAM). */
  bytes: number[];
}

export interface SpawnPlan {
  modelRef: string;
  modelPath: string;
  backend: Backend;
  /** The first device (what the worker reports); `placement` has them all. */
  device: number;
  placement: WorkerPlacement;
  /** Idle time before the worker is stopped; 0 = never. */
  keepAliveMs: number;
  contextSize: number;
  slots: number;
  threads: number;
  batchSize?: number;
  /** The node's native llama.cpp build folder (may not exist yet). */
  nativeDir?: string;
  /** CPU workers: the binary the node's calibration measured fastest at these threads; absent: loadLlama's rule. */
  cpuBinary?: CpuBinary;
  /** How concurrent streams share decodes (the calibration's decision or the hive's --decode-batching); absent: together. */
  decodeBatching?: DecodeBatching;
  /** Where the private copies of the prebuilt's CPU variants are (worker/cpu-variants.ts). */
  variantsDir?: string;
}

/** What the hive's spawn plan says about the model and how to run it, plus who the worker is. */
export type WorkerArgs = Omit<SpawnPlan, "placement" | "keepAliveMs"> & { id: string; hiveUrl: string; listen: string };
