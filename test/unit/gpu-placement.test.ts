// Placement of workers on a node's GPUs, device inventory parsing and the Start Worker choices: the pure
// logic under the GPU-node tests (test/integration/gpu-vulkan.test.ts runs it on real Vulkan devices).
import { test } from "node:test";
import assert from "node:assert/strict";
import type { DeviceInfo } from "../../hive-agent/src/protocol";
import { parseKeepAlive } from "../../hive-agent/src/protocol";
import { deviceRooms, placeWorker, type Reservation } from "../../hive-agent/src/hive/placement";
import {
  cudaDevices,
  parseNvidiaSmi,
  vulkanDevices,
  bestBackend,
  visibleList,
  type BackendProbe,
} from "../../hive-agent/src/hive/capabilities";
import { placementChoices, parseKeepAliveInput } from "../../extension/src/ui-core/nodes/worker-options";
import { deviceDescription, usageBar, workersOn } from "../../extension/src/ui-core/nodes/node-format";

const GiB = 2 ** 30;
const gpu = (index: number, free: number, total = 24 * GiB): DeviceInfo => ({
  backend: "cuda",
  index,
  name: `GPU ${index}`,
  vram_total_bytes: total,
  vram_free_bytes: free,
  pin_id: String(index),
});
const held = (workerId: string, devices: number[], bytes: number[], seenByDriver = false): Reservation => ({
  workerId,
  backend: "cuda",
  devices,
  bytes,
  seenByDriver,
});

test("free memory counts rbee's reservations once: unseen ones against the driver's figure, all against the total", () => {
  const devices = [gpu(0, 20 * GiB)];
  // A loading worker (not yet in the driver's figure) takes its reservation off the driver's free.
  assert.equal(deviceRooms(devices, "cuda", [held("a", [0], [6 * GiB])])[0].free, 14 * GiB);
  // A ready one the driver already counts is not taken off twice…
  assert.equal(deviceRooms(devices, "cuda", [held("a", [0], [6 * GiB], true)])[0].free, 18 * GiB);
  // …but a driver that reports no usage at all (software Vulkan) still sees total - rbee's claims.
  assert.equal(deviceRooms([gpu(0, 24 * GiB)], "cuda", [held("a", [0], [10 * GiB], true)])[0].free, 14 * GiB);
  // The node's limit for rbee caps it, and rooms list the workers on each device.
  const room = deviceRooms(devices, "cuda", [held("a", [0], [3 * GiB], true)], 4 * GiB)[0];
  assert.deepEqual([room.free, room.reserved, room.workers], [1 * GiB, 3 * GiB, ["a"]]);
});

test("auto placement: the device with room and the fewest workers; explicit devices are honoured", () => {
  const rooms = deviceRooms([gpu(0, 20 * GiB), gpu(1, 10 * GiB)], "cuda", [held("chat", [0], [4 * GiB], true)]);
  // GPU 0 has more free memory but already serves a worker: the completion model goes to GPU 1.
  assert.deepEqual(placeWorker({ backend: "cuda" }, rooms, 6 * GiB), { devices: [1], bytes: [6 * GiB] });
  assert.deepEqual(
    placeWorker({ backend: "cuda", device: "auto" }, rooms, 12 * GiB).devices,
    [0],
    "only GPU 0 has 12 GiB",
  );
  assert.deepEqual(placeWorker({ backend: "cuda", device: 0 }, rooms, 1 * GiB).devices, [0]);
  assert.throws(
    () => placeWorker({ backend: "cuda", device: 1 }, rooms, 12 * GiB),
    (e: any) => e.code === "VRAM_EXHAUSTED" && /cuda:1 \(GPU 1\) 10\.00 GiB free/.test(e.message),
  );
  assert.throws(
    () => placeWorker({ backend: "cuda", device: 7 }, rooms, 1),
    (e: any) => e.code === "BACKEND_UNAVAILABLE" && /cuda:0, cuda:1/.test(e.message),
  );
});

test("a model no single device holds is refused naming every device, or split in proportion to free memory", () => {
  const rooms = deviceRooms([gpu(0, 12 * GiB), gpu(1, 6 * GiB)], "cuda", []);
  assert.throws(
    () => placeWorker({ backend: "cuda" }, rooms, 15 * GiB),
    (e: any) => {
      assert.equal(e.code, "VRAM_EXHAUSTED");
      assert.deepEqual(
        e.details.devices.map((d: any) => [d.device, d.free_bytes]),
        [
          ["cuda:0", 12 * GiB],
          ["cuda:1", 6 * GiB],
        ],
      );
      assert.match(e.message, /allow the model to span devices/);
      return true;
    },
  );
  assert.deepEqual(placeWorker({ backend: "cuda", allowSplit: true }, rooms, 15 * GiB), {
    devices: [0, 1],
    bytes: [10 * GiB, 5 * GiB],
  });
  assert.deepEqual(placeWorker({ backend: "cuda", devices: [1, 0] }, rooms, 9 * GiB).devices, [0, 1]);
  assert.throws(
    () => placeWorker({ backend: "cuda", allowSplit: true }, rooms, 19 * GiB),
    (e: any) => /even all devices together/.test(e.message),
  );
  assert.throws(
    () => placeWorker({ backend: "vulkan" }, [], 1),
    (e: any) => e.code === "BACKEND_UNAVAILABLE",
  );
});

test("nvidia-smi rows honour CUDA_VISIBLE_DEVICES (indices and UUID prefixes) and give each GPU its pin", () => {
  const rows = parseNvidiaSmi(
    "0, GPU-aaa111, NVIDIA H100, 81559, 80000\n1, GPU-bbb222, NVIDIA H100, 81559, 1000\n2, GPU-ccc333, NVIDIA L4, 23034, 23000\n",
  );
  assert.deepEqual(
    cudaDevices(rows, undefined).map((d) => [d.index, d.pin_id, d.name]),
    [
      [0, "0", "NVIDIA H100"],
      [1, "1", "NVIDIA H100"],
      [2, "2", "NVIDIA L4"],
    ],
  );
  const shared = cudaDevices(rows, visibleList("2,GPU-bbb"));
  assert.deepEqual(
    shared.map((d) => [d.index, d.pin_id, d.vram_free_bytes]),
    [
      [0, "2", 23000 * 2 ** 20],
      [1, "1", 1000 * 2 ** 20],
    ],
  );
  assert.equal(visibleList(""), undefined);
});

test("Vulkan devices get their own VRAM and driver ids by probing each alone (GPU enumeration stubbed: no GPU here)", async () => {
  const all: BackendProbe = { names: ["NVIDIA RTX A4000", "AMD Radeon Pro"], total: 32 * GiB, free: 30 * GiB };
  // Driver order: 0 is a CPU-type device ggml skips by default, 1 and 2 the GPUs.
  const driver: Record<string, BackendProbe> = {
    "0": { names: ["llvmpipe"], total: 2 * GiB, free: 2 * GiB },
    "1": { names: ["NVIDIA RTX A4000"], total: 16 * GiB, free: 15 * GiB },
    "2": { names: ["AMD Radeon Pro"], total: 16 * GiB, free: 15 * GiB },
  };
  const probes: string[] = [];
  const probe = async (_gpu: "vulkan", id: string) => (probes.push(id), driver[id]);
  const found = await vulkanDevices(all, undefined, probe);
  assert.deepEqual(
    found.map((d) => [d.index, d.pin_id, d.name, d.vram_total_bytes]),
    [
      [0, "1", "NVIDIA RTX A4000", 16 * GiB],
      [1, "2", "AMD Radeon Pro", 16 * GiB],
    ],
  );
  assert.deepEqual(probes, ["0", "1", "2"], "each driver id is probed once");
  // With a list, its ids are used as they are.
  const listed = await vulkanDevices(
    { names: ["A", "B"], total: 4 * GiB, free: 4 * GiB },
    ["3", "5"],
    async (_g, id) => ({ names: [`dev${id}`], total: GiB, free: GiB }),
  );
  assert.deepEqual(
    listed.map((d) => d.pin_id),
    ["3", "5"],
  );
  assert.equal(
    bestBackend({
      backends: ["vulkan", "cpu"],
      devices: [],
      ram_total_bytes: 1,
      ram_free_bytes: 1,
      cpu_cores: 1,
      platform: "linux",
      arch: "x64",
    }),
    "cpu",
  );
});

test("keep-alive values: seconds, durations, 0 and -1 for never; anything else is refused", () => {
  assert.deepEqual(
    [
      parseKeepAlive(30),
      parseKeepAlive("5m"),
      parseKeepAlive("2h"),
      parseKeepAlive(0),
      parseKeepAlive(-1),
      parseKeepAlive("-1"),
      parseKeepAlive(undefined),
    ],
    [30, 300, 7200, 0, 0, 0, undefined],
  );
  for (const bad of [-5, 1.5, "soon", "5 minutes", true])
    assert.throws(
      () => parseKeepAlive(bad),
      (e: any) => e.code === "INVALID_REQUEST" && e.details.field === "keep_alive",
    );
  assert.deepEqual(
    [parseKeepAliveInput("90"), parseKeepAliveInput("10m"), parseKeepAliveInput("0"), parseKeepAliveInput("x")],
    [90, 600, 0, undefined],
  );
});

test("Start Worker offers auto first, each GPU with its free memory, all GPUs together, then the CPU", () => {
  const devices = [{ ...gpu(0, 8 * GiB), workers: ["w-1"] }, gpu(1, 20 * GiB)];
  const choices = placementChoices(devices);
  assert.deepEqual(
    choices.map((c) => c.label),
    ["Auto", "CUDA 0: GPU 0", "CUDA 1: GPU 1", "All CUDA GPUs (0, 1)", "CPU"],
  );
  assert.deepEqual(
    choices.map((c) => c.spec),
    [
      { allowSplit: true },
      { backend: "cuda", device: 0 },
      { backend: "cuda", device: 1 },
      { backend: "cuda", devices: [0, 1] },
      { backend: "cpu" },
    ],
  );
  assert.match(choices[1].description, /8\.0 GiB free · 1 worker$/);
  assert.deepEqual(
    placementChoices([]).map((c) => c.label),
    ["Auto"],
  );
});

test("the tree's GPU rows: a usage bar, free of total, and the workers placed there (split workers under each)", () => {
  assert.equal(usageBar(3, 10), "▰▰▰▱▱▱▱▱▱▱");
  assert.equal(usageBar(0, 0), "▱▱▱▱▱▱▱▱▱▱");
  assert.equal(
    deviceDescription({ ...gpu(0, 6 * GiB), workers: ["a", "b"] }),
    "▰▰▰▰▰▰▰▰▱▱ 6.0 GiB free of 24.0 GiB · 2 workers",
  );
  const w = (id: string, backend: "cuda" | "cpu", devices: number[]) =>
    ({ id, backend, device: devices[0] ?? 0, devices }) as any;
  const workers = [w("a", "cuda", [0]), w("b", "cuda", [0, 1]), w("c", "cpu", [])];
  assert.deepEqual(
    workersOn(gpu(0, 0), workers).map((x) => x.id),
    ["a", "b"],
  );
  assert.deepEqual(
    workersOn(gpu(1, 0), workers).map((x) => x.id),
    ["b"],
  );
});
