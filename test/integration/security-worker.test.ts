// Low-severity findings of the security review on a real hive and worker (docs/security.md).
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { RbeeError } from "../../hive-agent/src/protocol";
import { ensureModel } from "../fixtures/models";
import { REPO_ROOT, startHive, waitReady, collect, type TestHive } from "../helpers/hive";

async function codeOf(p: Promise<unknown>): Promise<RbeeError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof RbeeError, String(e));
    return e;
  }
  assert.fail("expected an error");
}

describe("low findings on a real hive", () => {
  let hive: TestHive;
  let dir: string;
  before(async () => {
    hive = await startHive([], { AWS_SECRET_ACCESS_KEY: "aws-secret-in-the-editor-env" });
    dir = mkdtempSync(path.join(tmpdir(), "rbee-sec-"));
  });
  after(async () => {
    await hive.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test("file-ref-echo: a file: ref tells nothing about a file that is not a GGUF model, not even whether it exists", async () => {
    const secret = path.join(dir, "secret.gguf");
    writeFileSync(secret, "root:x:0:0:secret-content\n");
    const a = await codeOf(hive.client.spawn({ model_ref: `file:${secret}`, threads: 1 }));
    const b = await codeOf(hive.client.spawn({ model_ref: `file:${path.join(dir, "missing.gguf")}`, threads: 1 }));
    const c = await codeOf(hive.client.spawn({ model_ref: `file:${dir}.gguf`, threads: 1 })); // not even there
    for (const e of [a, b, c]) assert.equal(e.code, "MODEL_NOT_FOUND");
    assert.ok(!a.message.includes("root"), `the file's bytes were echoed: ${a.message}`);
    assert.equal(
      a.message.replace(secret, "P"),
      b.message.replace(path.join(dir, "missing.gguf"), "P"),
      "an existing file and a missing one are told apart",
    );
  });

  test("chat-content-cap: a chat far larger than the context is refused before tokenizing, with PAYLOAD_TOO_LARGE", async () => {
    const spawned = await hive.client.spawn({
      model_ref: `file:${ensureModel("tiny")}`,
      slots: 1,
      threads: 1,
      context_size: 256,
    });
    const w = await waitReady(hive, spawned.worker_id);
    const client = hive.client.workerClient(w);
    const e = await codeOf(
      collect(client.chat({ messages: [{ role: "user", content: "word ".repeat(600_000) }], max_tokens: 4 })),
    );
    assert.equal(e.code, "PAYLOAD_TOO_LARGE");
    // Within the bound it is the usual context check, which names the tokens.
    const e2 = await codeOf(
      collect(client.chat({ messages: [{ role: "user", content: "word ".repeat(1000) }], max_tokens: 4 })),
    );
    assert.equal(e2.code, "INVALID_REQUEST");
    // The worker's environment does not carry the editor's secrets.
    const environ = (await import("node:fs")).readFileSync(`/proc/${w.pid}/environ`, "utf8");
    assert.ok(!environ.includes("aws-secret-in-the-editor-env"), "the worker inherited a secret");
  });
});

test("token-race: first runs started together all get the same hive token, none fails", async () => {
  const localHive = path.join(REPO_ROOT, "extension", "src", "keeper", "local-hive.ts");
  for (let round = 0; round < 4; round++) {
    const home = mkdtempSync(path.join(tmpdir(), "rbee-token-race-"));
    const go = path.join(home, "go");
    const code = `const { existsSync } = require("node:fs"); const { LocalHive } = require(${JSON.stringify(localHive)});
      const h = new LocalHive({ home: ${JSON.stringify(path.join(home, "hive"))} });
      process.stdout.write("ready\\n");
      while (!existsSync(${JSON.stringify(go)})) {}
      try { console.log("token=" + h.token()); } catch (e) { console.log("error=" + e.message); }`;
    const ready: Promise<void>[] = [];
    const runs = Array.from({ length: 6 }, () => {
      const p = spawn(process.execPath, ["--import", "tsx", "-e", code], {
        cwd: REPO_ROOT,
        stdio: ["ignore", "pipe", "inherit"],
      });
      let out = "";
      p.stdout!.on("data", (d) => (out += d));
      ready.push(new Promise((r) => p.stdout!.on("data", () => out.startsWith("ready\n") && r())));
      return new Promise<string>((r) => p.once("exit", () => r(out.replace(/^ready\n/, "").trim())));
    });
    await Promise.all(ready); // every run spins on the barrier now
    writeFileSync(go, "");
    const outs = await Promise.all(runs);
    for (const o of outs) assert.match(o, /^token=[\w-]{32}$/, `a run failed or read a partial token: ${o}`);
    assert.equal(new Set(outs).size, 1, `runs got different tokens: ${outs.join(" ")}`);
    assert.ok(existsSync(path.join(home, "hive", "token")));
    rmSync(home, { recursive: true, force: true });
  }
});
