// Model downloads through the hive: progress, retries with resume, stall limit, give-up, hf: refs,
// checksums, HF_TOKEN. The Hugging Face hub is a named loopback mock (test/helpers/fake-hf-hub.ts).
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { ensureModel } from "../fixtures/models";
import { FakeHfHub } from "../helpers/fake-hf-hub";
import { startHive, waitReady, collect, type TestHive } from "../helpers/hive";
import type { DownloadProgressEvent } from "../../hive-agent/src/protocol";

const HF_TOKEN = "hf_test_secret_token_value_0123456789";

describe("model downloads", () => {
  let hub: FakeHfHub;
  let hive: TestHive;
  const model = readFileSync(ensureModel("tiny"));
  const sha = createHash("sha256").update(model).digest("hex");

  before(async () => {
    hub = new FakeHfHub();
    const url = await hub.start();
    hive = await startHive(["--download-attempts", "6", "--download-backoff-ms", "30", "--download-stall-ms", "700"], {
      HF_ENDPOINT: url,
      HF_TOKEN,
    });
  });
  after(async () => {
    await hive.stop();
    await hub.stop();
  });

  async function download(modelRef: string, sha256?: string): Promise<DownloadProgressEvent[]> {
    const { download_id } = await hive.client.download({ model_ref: modelRef, ...(sha256 ? { sha256 } : {}) });
    return collect(hive.client.downloadProgress(download_id));
  }

  test("a URL download streams progress and completes into the catalog", async () => {
    hub.host("/files/plain.gguf", { data: model });
    const events = await download(`${hub.url}/files/plain.gguf`);
    const last = events.at(-1)!;
    assert.equal(last.stage, "complete");
    assert.equal((last as any).sha256, sha);
    const progress = events.filter((e) => e.stage === "downloading") as Extract<
      DownloadProgressEvent,
      { stage: "downloading" }
    >[];
    assert.ok(progress.length >= 1);
    assert.equal(progress.at(-1)!.bytes_downloaded, model.length);
    assert.equal(progress.at(-1)!.bytes_total, model.length);
    assert.deepEqual(readFileSync((last as any).local_path), model);
    assert.ok(
      (await hive.client.models()).some(
        (m) => m.model_ref === `${hub.url}/files/plain.gguf` && m.size_bytes === model.length,
      ),
    );
  });

  test("a download that fails twice resumes where it stopped and succeeds", async () => {
    hub.host("/files/flaky.gguf", {
      data: model,
      failures: [
        { kind: "cut", afterBytes: 1_000_000 },
        { kind: "stall", afterBytes: 500_000 },
      ],
    });
    const events = await download(`${hub.url}/files/flaky.gguf`);
    assert.equal(events.at(-1)!.stage, "complete", JSON.stringify(events.at(-1)));
    assert.equal(events.filter((e) => e.stage === "retrying").length, 2);
    const ranges = hub.requests.filter((r) => r.path === "/files/flaky.gguf").map((r) => r.range);
    // Each attempt resumes from what reached the disk: at most what the server sent before cutting
    // (bytes still in flight when a connection is reset are lost, more of them on a loaded machine).
    assert.equal(ranges.length, 3);
    assert.equal(ranges[0], undefined);
    const [first, second] = ranges.slice(1).map((r) => Number(/^bytes=(\d+)-$/.exec(r ?? "")?.[1]));
    assert.ok(first > 0 && first <= 1_000_000, `first resume at ${first}`);
    assert.ok(second > first && second <= first + 500_000, `second resume at ${second} after ${first}`);
    assert.equal((events.at(-1) as any).sha256, sha);
  });

  test("a download that keeps failing gives up after 6 attempts with DOWNLOAD_FAILED and the last error", async () => {
    hub.host("/files/dead.gguf", { data: model, alwaysFail: { kind: "status", status: 503 } });
    const events = await download(`${hub.url}/files/dead.gguf`);
    const last = events.at(-1) as any;
    assert.equal(last.stage, "error");
    assert.equal(last.code, "DOWNLOAD_FAILED");
    assert.match(last.message, /after 6 attempts.*HTTP 503/);
    assert.equal(events.filter((e) => e.stage === "retrying").length, 5);
    assert.equal(hub.requests.filter((r) => r.path === "/files/dead.gguf").length, 6);
  });

  test("hf:owner/repo picks the preferred quantization, verifies its sha256 and sends HF_TOKEN", async () => {
    hub.hostInRepo("acme", "coder-GGUF", "coder-Q8_0.gguf", { data: Buffer.from("not this one") });
    hub.hostInRepo("acme", "coder-GGUF", "coder-Q4_K_M.gguf", { data: model });
    const events = await download("hf:acme/coder-GGUF");
    const last = events.at(-1) as any;
    assert.equal(last.stage, "complete", JSON.stringify(last));
    assert.match(last.local_path, /hf\/acme\/coder-GGUF\/coder-Q4_K_M\.gguf$/);
    const fetched = hub.requests.filter((r) => r.path.includes("coder-GGUF"));
    assert.ok(fetched.every((r) => r.authorization === `Bearer ${HF_TOKEN}`));
    // The downloaded model is in the catalog and a worker runs it.
    const w = await waitReady(
      hive,
      (await hive.client.spawn({ model_ref: "hf:acme/coder-GGUF", slots: 1, threads: 1 })).worker_id,
    );
    const stream = await collect(hive.client.workerClient(w).inference({ prompt: "x", max_tokens: 3 }));
    assert.equal((stream.at(-1) as any).tokens_out, 3);
    await hive.client.shutdown(w.id);
    assert.ok(!hive.log().includes(HF_TOKEN), "HF_TOKEN leaked into the log");
  });

  test("a checksum mismatch fails the download and keeps no file", async () => {
    hub.hostInRepo("acme", "bad-GGUF", "bad-Q4_K_M.gguf", { data: model, sha256: "0".repeat(64) });
    const events = await download("hf:acme/bad-GGUF/bad-Q4_K_M.gguf");
    const last = events.at(-1) as any;
    assert.equal(last.code, "DOWNLOAD_FAILED");
    assert.match(last.message, /checksum mismatch/);
    assert.ok(!(await hive.client.models()).some((m) => m.model_ref.includes("bad-GGUF")));
  });

  test("a repository the hub does not have gets MODEL_NOT_FOUND at once", async () => {
    const events = await download("hf:nobody/nothing");
    assert.equal((events.at(-1) as any).code, "MODEL_NOT_FOUND");
    assert.equal(events.filter((e) => e.stage === "retrying").length, 0);
  });

  test("a local ref cannot be downloaded", async () => {
    await assert.rejects(
      hive.client.download({ model_ref: "file:/tmp/x.gguf" }),
      (e: any) => e.code === "INVALID_REQUEST",
    );
  });
});
