// GPU nodes on a real Vulkan backend without a GPU: Mesa's lavapipe as two software "GPUs"
// (test/helpers/lavapipe.ts), node-llama-cpp's Vulkan prebuilt running real kernels on them, real hive
// and worker processes. Vulkan on a CPU is slow: every generation here asks for a handful of tokens.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { ensureModel } from "../fixtures/models";
import { AGENT_BUNDLE, isAlive, startHive, waitReady, collect, type TestHive } from "../helpers/hive";
import { newRbeeHome, runCli } from "../helpers/cli";
import { softwareGpus } from "../helpers/lavapipe";
import { waitUntil } from "../helpers/wait";

const gpus = softwareGpus(2);
const tiny = (seed = 42) => `file:${ensureModel("tiny", seed)}`;
const MiB = 2 ** 20;

describe("Mesa's Vulkan installed, no usable GPU", () => {
  test("detection offers the CPU only and says nothing on the terminal; rbee infer runs on the CPU", async () => {
    const d = spawnSync(process.execPath, [AGENT_BUNDLE, "detect"], {
      env: { ...process.env, ...gpus.hidden },
      encoding: "utf8",
    });
    assert.equal(d.status, 0, d.stderr);
    assert.deepEqual(JSON.parse(d.stdout).backends, ["cpu"]);
    assert.equal(d.stderr, "", "node-llama-cpp's detection lines reached the terminal");
    const notes = spawnSync(process.execPath, [AGENT_BUNDLE, "detect", "--notes"], {
      env: { ...process.env, ...gpus.hidden },
      encoding: "utf8",
    });
    assert.match(notes.stderr, /vulkan: the backend loads but offers no usable device/);

    const home = newRbeeHome();
    const env = { RBEE_HOME: home, ...gpus.hidden };
    try {
      const r = await runCli(
        ["infer", "--model", tiny(), "--prompt", "fn main", "--max-tokens", "4", "--threads", "1", "--json"],
        env,
      );
      assert.equal(r.code, 0, r.stderr);
      assert.equal(JSON.parse(r.stdout).tokens_out, 4);
      const workers = JSON.parse((await runCli(["workers", "list", "--json"], env)).stdout).workers;
      assert.equal(workers.length, 1);
      assert.equal(workers[0].backend, "cpu");
    } finally {
      await runCli(["hive", "stop"], env);
    }
  });
});

describe("a node with two Vulkan GPUs", () => {
  let hive: TestHive;
  // A per-GPU limit of 16 MiB makes the tiny model's memory estimate (≈ 4 MiB of weights × 1.2 plus
  // 256 bytes of KV cache per token and slot) decide placement without gigabytes of allocations.
  before(async () => {
    hive = await startHive(["--vram-limit-mib", "16"], gpus.visible);
  });
  after(async () => hive.stop());

  test("capabilities list each GPU with its index, name, VRAM and the id that pins a worker to it", async () => {
    const caps = await hive.client.capabilities();
    assert.deepEqual(caps.backends, ["vulkan", "cpu"]);
    const vk = caps.devices.filter((d) => d.backend === "vulkan");
    assert.deepEqual(
      vk.map((d) => [d.index, d.pin_id]),
      [
        [0, "0"],
        [1, "1"],
      ],
    );
    for (const d of vk) {
      assert.match(d.name, /llvmpipe/);
      assert.equal(d.vram_total_bytes, 2 ** 31, "each software GPU alone reports its own 2 GiB");
      assert.equal(d.vram_free_bytes, 16 * MiB, "free is capped by the node's limit for rbee");
      assert.deepEqual(d.workers, []);
    }
  });

  test("two models land on different GPUs, each worker sees only its own, and both generate", async () => {
    const a = await hive.client.spawn({ model_ref: tiny(42), context_size: 1024, slots: 1 });
    const b = await hive.client.spawn({ model_ref: tiny(43), context_size: 1024, slots: 1 });
    const [wa, wb] = [await waitReady(hive, a.worker_id), await waitReady(hive, b.worker_id)];
    assert.equal(wa.backend, "vulkan");
    assert.notEqual(wa.device, wb.device, "both workers were placed on one GPU");
    for (const w of [wa, wb]) {
      assert.deepEqual(w.devices, [w.device]);
      assert.equal(w.gpu_devices?.length, 1, `worker ${w.id} sees ${w.gpu_devices?.length} GPUs`);
      const events = await collect(
        hive.client.workerClient(w).inference({ prompt: "x", max_tokens: 3, temperature: 0 }),
      );
      assert.equal(events.at(-1)?.type, "end");
      assert.equal((events.at(-1) as any).tokens_out, 3);
    }
    const caps = await hive.client.capabilities();
    for (const w of [wa, wb]) {
      const d = caps.devices.find((x) => x.backend === "vulkan" && x.index === w.device)!;
      assert.deepEqual(d.workers, [w.id]);
      assert.ok(d.vram_reserved_bytes! > 0 && d.vram_free_bytes === 16 * MiB - d.vram_reserved_bytes!);
    }
    // `workers stop` frees the GPU at once.
    await hive.client.shutdown(wa.id);
    await hive.client.shutdown(wb.id);
    const after = await hive.client.capabilities();
    for (const d of after.devices) assert.deepEqual([d.workers, d.vram_reserved_bytes], [[], 0]);
  });

  test("a model too big for either GPU is refused with each GPU's free memory, and spans both when allowed", async () => {
    const big = { model_ref: tiny(), context_size: 4096, slots: 20 }; // ≈ 25 MiB: more than 16, less than 32
    await assert.rejects(hive.client.spawn(big), (e: any) => {
      assert.equal(e.code, "VRAM_EXHAUSTED");
      assert.deepEqual(
        e.details.devices.map((d: any) => [d.device, d.free_bytes]),
        [
          ["vulkan:0", 16 * MiB],
          ["vulkan:1", 16 * MiB],
        ],
      );
      assert.match(e.message, /vulkan:0 \(llvmpipe.*?\)\) 16 MiB free, vulkan:1 \(llvmpipe.*?\)\) 16 MiB free/);
      assert.match(e.message, /span devices/);
      return true;
    });
    const s = await hive.client.spawn({ ...big, allow_split: true });
    const w = await waitReady(hive, s.worker_id);
    assert.deepEqual(w.devices, [0, 1]);
    assert.equal(w.gpu_devices?.length, 2, "a split worker sees both of its GPUs");
    const events = await collect(hive.client.workerClient(w).inference({ prompt: "x", max_tokens: 2, temperature: 0 }));
    assert.equal((events.at(-1) as any).tokens_out, 2);
    await hive.client.shutdown(w.id);
  });

  test("two spawns at once that fit only once: one is placed, the other refused", async () => {
    const one = { model_ref: tiny(), context_size: 4096, slots: 8, device: 0 }; // ≈ 12.9 MiB of 16
    const results = await Promise.allSettled([hive.client.spawn(one), hive.client.spawn(one)]);
    const ok = results.filter((r) => r.status === "fulfilled");
    const refused = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    assert.equal(ok.length, 1, JSON.stringify(results.map((r) => r.status)));
    assert.equal(refused[0].reason.code, "VRAM_EXHAUSTED");
    await hive.client.shutdown((ok[0] as PromiseFulfilledResult<any>).value.worker_id);
  });
});

describe("keep-alive", () => {
  test("a worker spawned with keep_alive 0 survives the idle sweep that stops the others", async () => {
    const hive = await startHive(["--idle-timeout-ms", "1000", "--health-interval-ms", "200"]);
    try {
      const forever = await waitReady(
        hive,
        (await hive.client.spawn({ model_ref: tiny(), backend: "cpu", slots: 1, threads: 1, keep_alive: 0 })).worker_id,
      );
      const normal = await waitReady(
        hive,
        (await hive.client.spawn({ model_ref: tiny(), backend: "cpu", slots: 1, threads: 1 })).worker_id,
      );
      assert.equal(forever.keep_alive_s, 0);
      assert.equal(normal.keep_alive_s, 1);
      await waitUntil(() => !isAlive(normal.pid), { timeout: 15_000, what: "the idle worker to stop" });
      // Two more sweeps after the idle one stopped: the keep-alive-0 worker is still there.
      await new Promise((r) => setTimeout(r, 500));
      assert.ok(isAlive(forever.pid), "the keep_alive 0 worker was stopped");
      assert.deepEqual(
        (await hive.client.workers()).map((w) => w.id),
        [forever.id],
      );
    } finally {
      await hive.stop();
    }
  });

  test("two CPU spawns at once that fit the node's RAM limit only once: one is placed, the other refused", async () => {
    const hive = await startHive(["--ram-limit-mib", "16"]);
    try {
      const one = { model_ref: tiny(), backend: "cpu" as const, context_size: 4096, slots: 8, threads: 1 };
      const results = await Promise.allSettled([hive.client.spawn(one), hive.client.spawn(one)]);
      assert.deepEqual(results.map((r) => r.status).sort(), ["fulfilled", "rejected"]);
      assert.equal(
        (results.find((r) => r.status === "rejected") as PromiseRejectedResult).reason.code,
        "INSUFFICIENT_RAM",
      );
    } finally {
      await hive.stop();
    }
  });
});
