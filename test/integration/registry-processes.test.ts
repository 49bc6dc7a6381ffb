// The registry shared by real processes: a writer killed with SIGKILL mid-loop loses nothing it
// reported as committed; four writers at once lose nothing at all; the esbuild bundle finds its wasm.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from "node:child_process";
import { copyFileSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { createInterface } from "node:readline";
import os from "node:os";
import path from "node:path";
import * as esbuild from "esbuild";
import { Registry } from "../../extension/src/keeper/registry";

const root = path.resolve(__dirname, "..", "..");
const CHILD = path.join(root, "test", "helpers", "registry-child.ts");

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), "rbee-registry-proc-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function startChild(
  t: { after: (fn: () => void) => void },
  args: string[],
): {
  child: ChildProcessWithoutNullStreams;
  lines: AsyncIterableIterator<string>;
  stderr: () => string;
  exited: Promise<number | null>;
} {
  const child = spawn(process.execPath, ["--import", "tsx", CHILD, ...args], {
    cwd: root,
    stdio: ["pipe", "pipe", "pipe"],
  });
  let err = "";
  child.stderr.on("data", (d) => (err += d));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  });
  return { child, lines: createInterface({ input: child.stdout })[Symbol.asyncIterator](), stderr: () => err, exited };
}

async function nextLine(lines: AsyncIterableIterator<string>, what: string, stderr: () => string): Promise<string> {
  const r = await lines.next();
  if (r.done) throw new Error(`child closed stdout while waiting for ${what}; stderr:\n${stderr()}`);
  return r.value;
}

test("a writer killed with SIGKILL mid-loop leaves a file with every row it reported committed", async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, "registry.sqlite");
  // Several rounds on the same file, each killed after a different number of writes, so the kill
  // lands at different points of the write (inside the lock, between temp write and rename, …).
  const reported: string[] = [];
  for (const [round, killAfter] of [37, 61, 90].entries()) {
    const { child, lines, stderr, exited } = startChild(t, ["loop", file, `r${round}`]);
    let seen = 0;
    for (;;) {
      const line = await nextLine(lines, "a commit", stderr);
      const m = /^committed (\S+)$/.exec(line);
      assert.ok(m, `unexpected child output: ${line}`);
      reported.push(m[1]);
      if (++seen === killAfter) break;
    }
    child.kill("SIGKILL");
    await exited;
    // Lines the child printed before it died are commits too.
    for await (const line of { [Symbol.asyncIterator]: () => lines }) {
      const m = /^committed (\S+)$/.exec(line);
      if (m) reported.push(m[1]);
    }
    assert.equal(child.signalCode, "SIGKILL");
  }

  const logs: string[] = [];
  const r = await Registry.open(file, { logger: (_l, m) => logs.push(m), lock: { timeoutMs: 5000 } });
  t.after(() => r.close());
  const ids = new Set((await r.listWorkers()).map((w) => w.id));
  const missing = reported.filter((id) => !ids.has(id));
  assert.deepEqual(missing, [], `every reported commit is on disk (${reported.length} reported, ${ids.size} found)`);
  // At most one unreported commit per round: the one written between the rename and the print.
  assert.ok(ids.size <= reported.length + 3, `${ids.size} rows for ${reported.length} reported commits`);
  assert.equal(await r.needsRebuild(), null, "the file was never seen corrupt");
  assert.deepEqual(
    readdirSync(dir).filter((n) => n.includes(".corrupt-") || n.includes(".tmp-")),
    [],
    `no corrupt or temp file left: ${logs.join(" | ")}`,
  );
});

test("4 processes registering 50 workers each at once end with exactly 200 rows", async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, "registry.sqlite");
  const children = [0, 1, 2, 3].map((k) => startChild(t, ["register", file, `p${k}`, "50"]));
  for (const c of children) assert.equal(await nextLine(c.lines, "ready", c.stderr), "ready");
  for (const c of children) c.child.stdin.write("go\n"); // all four start writing together
  for (const c of children) {
    assert.equal(await nextLine(c.lines, "done", c.stderr), "done 50");
    assert.equal(await c.exited, 0, c.stderr());
  }

  const r = await Registry.open(file, { logger: () => {} });
  t.after(() => r.close());
  const workers = await r.listWorkers();
  assert.equal(workers.length, 200);
  for (let k = 0; k < 4; k++) {
    const mine = workers.filter((w) => w.id.startsWith(`p${k}-`));
    assert.equal(mine.length, 50, `all 50 of process ${k}`);
    assert.ok(mine.every((w) => w.api_key === `key-${w.id}`));
  }
  assert.deepEqual(
    (await r.listNodes()).map((n) => n.alias),
    ["shared"],
  );
});

test("bundled by esbuild, the registry loads sql-wasm.wasm from next to the bundle, or says it is missing", async (t) => {
  const dir = tempDir(t);
  const entry = path.join(dir, "entry.ts");
  const bundle = path.join(dir, "app.js");
  writeFileSync(
    entry,
    `import { Registry } from ${JSON.stringify(path.join(root, "extension/src/keeper/registry"))};
     import { loadedSqlWasmPath } from ${JSON.stringify(path.join(root, "extension/src/keeper/registry-sqljs"))};
     Registry.open(process.argv[2], { logger: () => {} }).then(async (r) => {
       await r.upsertNode({ alias: "localhost", host: "127.0.0.1", transport: "loopback" });
       console.log(JSON.stringify({ nodes: (await r.listNodes()).length, wasm: loadedSqlWasmPath() }));
       r.close();
     }, (e) => { console.error(e.code + ": " + e.message); process.exit(2); });`,
  );
  // The same options esbuild.mjs uses for dist/*.js.
  await esbuild.build({
    entryPoints: [entry],
    outfile: bundle,
    bundle: true,
    platform: "node",
    target: "node20",
    format: "cjs",
    logLevel: "error",
  });

  // Run from a folder with no node_modules above it, so the sql.js package cannot be resolved.
  const run = () =>
    spawnSync(process.execPath, [bundle, path.join(dir, "r.sqlite")], {
      cwd: dir,
      encoding: "utf8",
      env: { PATH: process.env.PATH },
    });
  const missing = run();
  assert.equal(missing.status, 2, missing.stderr);
  assert.match(missing.stderr, /REGISTRY_WASM_NOT_FOUND: cannot find sql\.js's sql-wasm\.wasm/);
  assert.match(
    missing.stderr,
    new RegExp(`looked at: ${path.join(dir, "sql-wasm.wasm").replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`),
  );

  copyFileSync(require.resolve("sql.js/dist/sql-wasm.wasm"), path.join(dir, "sql-wasm.wasm"));
  const ok = run();
  assert.equal(ok.status, 0, ok.stderr);
  assert.deepEqual(JSON.parse(ok.stdout), { nodes: 1, wasm: path.join(dir, "sql-wasm.wasm") });
});
