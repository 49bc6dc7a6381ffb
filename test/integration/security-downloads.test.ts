// Security regressions for model downloads (docs/security.md, findings 2 and 4), for real against
// loopback servers: the Hugging Face hub is the named mock in test/helpers/fake-hf-hub.ts.
import { test, describe, after } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { ensureModel } from "../fixtures/models";
import { FakeHfHub } from "../helpers/fake-hf-hub";
import { startHive, collect, type TestHive } from "../helpers/hive";
import { RbeeError, type DownloadProgressEvent } from "../../hive-agent/src/protocol";
import { checkDestination } from "../../hive-agent/src/catalog/download";

const HF_TOKEN = "hf_security_secret_token_0123456789";
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

async function download(hive: TestHive, modelRef: string): Promise<DownloadProgressEvent[]> {
  const { download_id } = await hive.client.download({ model_ref: modelRef });
  return collect(hive.client.downloadProgress(download_id));
}

/** Two hubs where the second one's URL starts with the first one's (port P and port P·10+k). */
async function lookAlikeHubs(): Promise<{ hub: FakeHfHub; other: FakeHfHub }> {
  for (let i = 0; i < 50; i++) {
    const p = 2000 + Math.floor(Math.random() * 4500);
    const hub = new FakeHfHub();
    try {
      await hub.start(p);
    } catch {
      continue;
    }
    for (let k = 0; k < 10; k++) {
      const other = new FakeHfHub();
      try {
        await other.start(p * 10 + k);
        return { hub, other };
      } catch {
        // taken: next k
      }
    }
    await hub.stop();
  }
  throw new Error("no pair of free look-alike ports");
}

describe("finding 2: HF_TOKEN", () => {
  test("hf-token-lookalike: HF_TOKEN goes to the endpoint's origin only, not to a URL that merely starts the same", async () => {
    const { hub, other } = await lookAlikeHubs();
    const model = readFileSync(ensureModel("tiny"));
    other.host("/files/model.gguf", { data: model });
    hub.hostInRepo("acme", "coder", "coder-Q4_K_M.gguf", { data: model });
    assert.ok(other.url.startsWith(hub.url), `${other.url} should start with ${hub.url}`);
    const hive = await startHive([], { HF_ENDPOINT: hub.url, HF_TOKEN });
    try {
      const events = await download(hive, `${other.url}/files/model.gguf`);
      assert.equal(events.at(-1)?.stage, "complete", JSON.stringify(events.at(-1)));
      assert.ok(other.requests.length > 0);
      assert.ok(
        other.requests.every((r) => r.authorization === undefined),
        "the look-alike host got the Hugging Face token",
      );
      // The real endpoint still gets it.
      assert.equal((await download(hive, "hf:acme/coder")).at(-1)?.stage, "complete");
      assert.ok(hub.requests.some((r) => r.authorization === `Bearer ${HF_TOKEN}`));
      assert.ok(!hive.log().includes(HF_TOKEN));
    } finally {
      await hive.stop();
      await hub.stop();
      await other.stop();
    }
  });
});

describe("finding 4: downloads", () => {
  const hub = new FakeHfHub();
  const v1 = readFileSync(ensureModel("tiny", 42));
  const v2 = readFileSync(ensureModel("tiny", 43));
  let hive: TestHive;
  after(async () => {
    await hive?.stop();
    await hub.stop();
  });

  test("download-size-cap: a model over --download-max-bytes is refused at once and nothing stays on disk", async () => {
    await hub.start();
    hive = await startHive([
      "--download-attempts",
      "1",
      "--download-backoff-ms",
      "20",
      "--download-max-bytes",
      String(v1.length + 100),
      "--download-retain-ms",
      "300",
    ]);
    hub.host("/big/model.gguf", { data: Buffer.concat([v1, Buffer.alloc(4096)]) });
    const events = await download(hive, `${hub.url}/big/model.gguf`);
    const last = events.at(-1)!;
    assert.equal(last.stage, "error");
    assert.match((last as { message: string }).message, /larger than the limit/);
    assert.ok(!(await hive.client.models()).some((m) => m.model_ref.includes("/big/")));
  });

  test("download-gguf-magic: a file that is not GGUF is refused and not stored as a model", async () => {
    hub.host("/html/model.gguf", { data: Buffer.from("<html>login page</html>".repeat(10)) });
    const last = (await download(hive, `${hub.url}/html/model.gguf`)).at(-1)!;
    assert.equal(last.stage, "error");
    assert.match((last as { message: string }).message, /not a GGUF model/);
    assert.ok(!(await hive.client.models()).some((m) => m.model_ref.includes("/html/")));
  });

  test("download-catalog-collision: two URLs with the same host and file name are two models", async () => {
    hub.host("/a/model.gguf", { data: v1 });
    hub.host("/b/model.gguf", { data: v2 });
    const a = (await download(hive, `${hub.url}/a/model.gguf`)).at(-1)!;
    const b = (await download(hive, `${hub.url}/b/model.gguf`)).at(-1)!;
    assert.ok(a.stage === "complete" && b.stage === "complete");
    assert.notEqual(a.local_path, b.local_path);
    assert.equal(sha(readFileSync(a.local_path)), sha(v1), "the first model's file was overwritten by the second");
    assert.equal(sha(readFileSync(b.local_path)), sha(v2));
  });

  test("download-part-splice: a partial file is never resumed onto different content", async () => {
    hub.host("/s/model.gguf", { data: v1, alwaysFail: { kind: "cut", afterBytes: 4096 } });
    const failed = (await download(hive, `${hub.url}/s/model.gguf`)).at(-1)!;
    assert.equal(failed.stage, "error");
    // The server now has another version at the same URL.
    hub.host("/s/model.gguf", { data: v2 });
    const done = (await download(hive, `${hub.url}/s/model.gguf`)).at(-1)!;
    assert.equal(done.stage, "complete", JSON.stringify(done));
    assert.equal(
      sha(readFileSync((done as { local_path: string }).local_path)),
      sha(v2),
      "the old part was spliced onto the new file",
    );
  });

  test("download-redirect-ssrf: redirects go on only to https on public addresses (plain http and internal addresses refused)", async () => {
    const refuses = async (to: string, from: string) =>
      assert.rejects(
        checkDestination(new URL(to), new URL(from)),
        (e: unknown) => e instanceof RbeeError && e.code === "DOWNLOAD_FAILED" && /refusing/.test(e.message),
      );
    await refuses("https://169.254.169.254/latest/meta-data.gguf", "https://models.example/x.gguf");
    await refuses("https://10.0.0.7/x.gguf", "https://models.example/x.gguf");
    await refuses("https://[::1]:8080/x.gguf", "https://models.example/x.gguf");
    await refuses("https://127.0.0.1:9/x.gguf", "https://models.example/x.gguf");
    await refuses("http://93.184.215.14/x.gguf", "https://models.example/x.gguf");
    await checkDestination(new URL("https://93.184.215.14/x.gguf"), new URL("https://models.example/x.gguf"));
    // For real: a loopback server redirecting to a non-loopback http address is refused before any connection.
    hub.host("/r/model.gguf", { data: v1, redirectTo: "http://192.0.2.1/evil.gguf" });
    const last = (await download(hive, `${hub.url}/r/model.gguf`)).at(-1)!;
    assert.equal(last.stage, "error");
    assert.match((last as { message: string }).message, /refusing to download from http:\/\/192\.0\.2\.1/);
  });

  test("download-pruned: a finished download's record is dropped after --download-retain-ms", async () => {
    hub.host("/p/model.gguf", { data: v1 });
    const { download_id } = await hive.client.download({ model_ref: `${hub.url}/p/model.gguf` });
    assert.equal((await collect(hive.client.downloadProgress(download_id))).at(-1)?.stage, "complete");
    const deadline = Date.now() + 20_000;
    let gone = false;
    while (!gone && Date.now() < deadline) {
      gone = await collect(hive.client.downloadProgress(download_id)).then(
        () => false,
        (e) => e instanceof RbeeError && e.code === "NOT_FOUND",
      );
      if (!gone) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(gone, "the finished download is still kept");
    assert.ok(existsSync(`${hive.home}/models`));
  });
});
