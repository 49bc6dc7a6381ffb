// CPU calibration's parts: the generated model llama.cpp must accept, the stored result's key and
// validation, deferring while a worker is busy, and loading a chosen prebuilt variant (or falling back).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import {
  buildCalibrationModel,
  CALIBRATION_TOKENS,
  ensureCalibrationModel,
} from "../../hive-agent/src/calibration/model";
import { readMetadata, ValueType } from "../../hive-agent/src/util/gguf";
import {
  CALIBRATION_FILE,
  Calibrator,
  calibrationKey,
  type CalibratorOptions,
} from "../../hive-agent/src/hive/calibrator";
import { prebuiltCpuVariants, prepareVariant, variantReady } from "../../hive-agent/src/worker/cpu-variants";
import { installedPackageDir, loadLlama } from "../../hive-agent/src/worker/native-build";
import { waitUntil } from "../helpers/wait";
import type { Logger } from "../../hive-agent/src/util/log";

const quiet: Logger = { debug() {}, info() {}, warn() {}, error() {} };
const variants = prebuiltCpuVariants(installedPackageDir());

test("the calibration model is deterministic, carries its own SentencePiece vocabulary, and llama.cpp loads and decodes it", async () => {
  const small = { nEmbd: 64, nLayer: 1, nHead: 2, nFf: 128, nVocab: 512, contextLength: 256 };
  assert.ok(buildCalibrationModel(small).equals(buildCalibrationModel(small)));
  const kv = readMetadata(buildCalibrationModel(small));
  assert.equal(kv.get("tokenizer.ggml.model")?.value, "llama");
  const tokens = kv.get("tokenizer.ggml.tokens");
  assert.ok(tokens?.type === ValueType.ARRAY && tokens.value.length === 512);
  assert.equal(tokens.value[CALIBRATION_TOKENS.firstByte + 0x0a], "<0x0A>");

  const dir = mkdtempSync(path.join(tmpdir(), "rbee-calmodel-"));
  try {
    const file = ensureCalibrationModel(dir);
    assert.equal(ensureCalibrationModel(dir), file, "made once");
    const { getLlama, LlamaLogLevel } = await import("node-llama-cpp");
    const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
    const model = await llama.loadModel({ modelPath: file });
    try {
      // The tokenizer works both ways (llama.cpp accepted the vocabulary), and greedy decoding never
      // reaches an end-of-generation token: every candidate decodes the same count.
      assert.equal(model.detokenize(model.tokenize("hello world")), "hello world");
      const context = await model.createContext({ contextSize: 128, threads: 1 });
      let n = 0;
      for await (const t of context.getSequence().evaluate(model.tokenize("def f():", true), { temperature: 0 })) {
        assert.ok(!model.isEogToken(t), `token ${n} is an end-of-generation token`);
        if (++n === 24) break;
      }
      await context.dispose();
    } finally {
      await model.dispose();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

function options(
  home: string,
  busy: () => Promise<string | undefined>,
  variantList = variants.slice(0, 2),
): CalibratorOptions {
  return {
    home,
    mode: "auto",
    agentScript: "/nonexistent/hive-agent.js",
    nativeDir: path.join(home, "native"),
    variantsDir: path.join(home, "cpu-variants"),
    variants: variantList,
    rounds: 2,
    tokens: 8,
    busy,
    log: quiet,
  };
}
const calibrator = (...args: Parameters<typeof options>) => new Calibrator(options(...args));
const cpuNode = { backends: ["cpu" as const] };
const method = { nativeDir: "/nonexistent", rounds: 2, tokens: 8 };

test(
  "the key changes with the thread count, the candidates and the method",
  { skip: variants.length < 2 && "needs a prebuilt with CPU variants" },
  () => {
    const two = variants.slice(0, 2).map((v) => `prebuilt:${v}` as const);
    const base = calibrationKey(two, 1, method);
    assert.equal(calibrationKey([...two].reverse(), 1, method), base, "order does not matter");
    assert.notEqual(calibrationKey(two, 2, method), base);
    assert.notEqual(calibrationKey(two.slice(0, 1), 1, method), base);
    assert.notEqual(calibrationKey(two, 1, { ...method, tokens: 16 }), base);
  },
);

test(
  "a stored result with the same key is used at once; a corrupt or stale one is measured again, after the busy workers",
  { skip: variants.length < 2 && "needs a prebuilt with CPU variants" },
  async () => {
    const home = mkdtempSync(path.join(tmpdir(), "rbee-calib-"));
    const busy = async () => "worker w-12345678 is busy";
    try {
      const probe = calibrator(home, busy);
      const [a, b] = probe.candidates();
      const key = calibrationKey([a, b], 1, { nativeDir: path.join(home, "native"), rounds: 2, tokens: 8 });
      const stored = {
        key,
        threads: 1,
        measured_at: 1000,
        winner: b,
        results: [
          { binary: a, tokens_per_second: 10, runs: [9, 11] },
          { binary: b, tokens_per_second: 20, runs: [19, 21] },
        ],
      };
      writeFileSync(path.join(home, CALIBRATION_FILE), JSON.stringify(stored));
      const hit = calibrator(home, busy);
      hit.ensure(cpuNode, 1);
      assert.deepEqual(
        [hit.status().state, hit.status().winner, hit.status().winner_tokens_per_second],
        ["ready", b, 20],
      );
      assert.equal(hit.binaryFor(1), b);
      assert.equal(hit.binaryFor(2), undefined, "another thread count was not measured: the built-in rule");

      // Another thread count: measured again, but never next to a busy worker.
      hit.ensure(cpuNode, 2);
      await waitUntil(() => hit.status().state === "waiting", {
        timeout: 10_000,
        what: "the calibration to wait for the busy worker",
      });
      assert.match(hit.status().detail, /waiting: worker w-12345678 is busy/);
      assert.equal(hit.binaryFor(1), b, "the last result still holds while the new one waits");
      await hit.stop();

      for (const bad of [
        "{not json",
        JSON.stringify({ ...stored, winner: "prebuilt:nonexistent" }),
        JSON.stringify({ ...stored, results: [{ binary: a }] }),
      ]) {
        writeFileSync(path.join(home, CALIBRATION_FILE), bad);
        const c = calibrator(home, busy);
        c.ensure(cpuNode, 1);
        assert.notEqual(c.status().state, "ready", bad);
        assert.equal(c.binaryFor(1), undefined);
        await c.stop();
      }
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  },
);

test("calibration skips GPU nodes, --calibrate off, and nodes with nothing to choose", () => {
  const home = mkdtempSync(path.join(tmpdir(), "rbee-calib-"));
  try {
    const idle = async () => undefined;
    const gpu = calibrator(home, idle);
    gpu.ensure({ backends: ["cuda", "cpu"] }, 1);
    assert.deepEqual([gpu.status().state, /GPU \(cuda\)/.test(gpu.status().detail)], ["skipped", true]);
    const off = new Calibrator({ ...options(home, idle), mode: "off" });
    off.ensure(cpuNode, 1);
    assert.match(off.status().detail, /turned off \(--calibrate off\)/);
    const one = calibrator(home, idle, variants.slice(0, 1));
    one.ensure(cpuNode, 1);
    assert.match(one.status().detail, /nothing to choose/);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test(
  "loadLlama falls back to the prebuilt when a chosen variant has no private copy; prepareVariant makes one and refuses unknown variants",
  { skip: !variants.includes("sse42") && "needs the sse42 variant" },
  async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "rbee-variants-"));
    try {
      const missing = await loadLlama({ threads: 1, binary: "prebuilt:sse42", variantsDir: dir });
      assert.deepEqual([missing.binary, missing.kind], ["prebuilt", "prebuilt"]);
      assert.match(missing.fallbackReason ?? "", /no private copy of the prebuilt's sse42 variant/);
      prepareVariant(dir, "sse42", installedPackageDir());
      assert.ok(variantReady(dir, "sse42", installedPackageDir()));
      assert.throws(
        () => prepareVariant(dir, "no-such-cpu", installedPackageDir()),
        /has no CPU variant "no-such-cpu"/,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
