// Downloads that never get an answer, and Cancel: a server that accepts the connection and never
// replies fails within the header limit (not undici's 300 s, six times over), and DELETE on a download
// stops it on the hive. A real hive; the "hub" is a loopback socket that never writes a byte.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { startHive, collect, type TestHive } from "../helpers/hive";
import { networkError } from "../../hive-agent/src/catalog/download";
import { RbeeError } from "../../hive-agent/src/protocol";

describe("downloads against a server that never answers", () => {
  let silent: net.Server;
  const sockets = new Set<net.Socket>();
  let hive: TestHive;

  before(async () => {
    silent = net.createServer((s) => {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
    });
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    const url = `http://127.0.0.1:${(silent.address() as net.AddressInfo).port}`;
    hive = await startHive(
      [
        "--download-attempts",
        "2",
        "--download-backoff-ms",
        "30",
        "--download-header-ms",
        "400",
        "--download-stall-ms",
        "60000",
      ],
      { HF_ENDPOINT: url },
    );
  });
  after(async () => {
    await hive.stop();
    for (const s of sockets) s.destroy();
    await new Promise((r) => silent.close(r));
  });

  test(
    "an hf: ref whose server never answers fails after the header limit on each attempt",
    { timeout: 60_000 },
    async () => {
      const { download_id } = await hive.client.download({ model_ref: "hf:someone/never-answers/model.gguf" });
      const events = await collect(hive.client.downloadProgress(download_id));
      const last = events.at(-1)!;
      assert.equal(last.stage, "error");
      assert.match((last as { message: string }).message, /did not answer within 0\.4 s/);
      assert.ok(
        events.some((e) => e.stage === "retrying"),
        "the first silent attempt is retried",
      );
    },
  );

  test(
    "DELETE on a running download stops it on the hive (Cancel in the editor reaches the node)",
    { timeout: 60_000 },
    async () => {
      const { download_id } = await hive.client.download({ model_ref: "hf:someone/cancelled/model.gguf" });
      assert.equal(await hive.client.cancelDownload(download_id), true);
      const events = await collect(hive.client.downloadProgress(download_id));
      const last = events.at(-1)!;
      assert.equal(last.stage, "error");
      assert.equal((last as { code: string }).code, "REQUEST_CANCELLED");
      assert.ok(!events.some((e) => e.stage === "retrying"), "a cancelled download is not retried");
      assert.equal(await hive.client.cancelDownload(download_id), false, "cancelling an ended download is a no-op");
    },
  );
});

test("a host name that does not resolve is worded as a DNS failure, not as an interrupted download", () => {
  const e = networkError(
    "https://huggingface.co",
    Object.assign(new TypeError("fetch failed"), {
      cause: Object.assign(new Error("getaddrinfo ENOTFOUND huggingface.co"), { code: "ENOTFOUND" }),
    }),
    30_000,
  );
  assert.ok(e instanceof RbeeError);
  assert.match(e.message, /cannot resolve huggingface\.co \(DNS lookup failed\)/);
});
