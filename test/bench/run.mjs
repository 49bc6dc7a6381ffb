// `npm run bench`: builds, then runs each benchmark section in its own process, one after the other
// (they would disturb each other's timings), and prints every figure with the ratio it is judged by.
// `npm run bench -- worker keeper` runs the named sections only.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";

const root = path.resolve(import.meta.dirname, "..", "..");
process.chdir(root);

const SECTIONS = {
  worker: {
    file: "test/bench/worker.bench.ts",
    fn: "benchWorker",
    title: "Worker SSE vs in-process node-llama-cpp (small model)",
    variants: [{ threads: 1 }, { threads: 2 }],
  },
  keeper: {
    file: "test/bench/keeper.bench.ts",
    fn: "benchKeeper",
    title: "Keeper: warm rbee infer, tokens/s through the keeper",
    variants: [{ threads: 1 }],
  },
  peer: {
    file: "test/bench/peer.bench.ts",
    fn: "benchPeer",
    title: "Worker SSE vs llama-server, same model and threads (small model)",
    variants: [{ threads: 1 }, { threads: 2 }],
  },
  registry: { file: "test/bench/registry.bench.ts", fn: "benchRegistry", title: "Registry (sql.js)", variants: [{}] },
  ssh: { file: "test/bench/ssh.bench.ts", fn: "benchSsh", title: "SSH transport and deploy", variants: [{}] },
  deploy: {
    file: "test/bench/deploy.bench.ts",
    fn: "benchDeploy",
    title: "Install path: bare-node deploy with the pinned runtime, no-op re-deploy, local hive from a .vsix",
    variants: [{}],
  },
  gateway: {
    file: "test/bench/gateway.bench.ts",
    fn: "benchGateway",
    title: "Gateway: rbee serve vs the worker directly; 8 clients over two nodes vs one",
    variants: [{}],
  },
  inline: {
    file: "test/bench/inline.bench.ts",
    fn: "benchInline",
    title: "Inline completions: engine overhead over the worker, cache hits",
    variants: [{ preset: "tiny" }, { preset: "small" }],
  },
  typing: {
    file: "test/bench/typing.bench.ts",
    fn: "benchTyping",
    title: "Typing replay: keystroke → ghost text, worker vs llama-server /infill (small model), per 100 keystrokes",
    variants: [{ threads: 1 }],
  },
};

const wanted = process.argv.slice(2).filter((a) => !a.startsWith("-"));
// A misspelt section would otherwise run nothing and exit 0.
const unknown = wanted.filter((w) => !(w in SECTIONS));
if (unknown.length) {
  console.error(`no such bench section: ${unknown.join(", ")} (sections: ${Object.keys(SECTIONS).join(", ")})`);
  process.exit(2);
}
const build = spawnSync(process.execPath, ["esbuild.mjs"], { stdio: "inherit" });
if (build.status !== 0) process.exit(build.status ?? 1);

let failed = 0;
// Each section's result per variant, for the side-by-side tables at the end.
const resultsDir = mkdtempSync(path.join(os.tmpdir(), "rbee-bench-"));
const sideBySide = [];
for (const [name, s] of Object.entries(SECTIONS)) {
  if (wanted.length && !wanted.includes(name)) continue;
  const columns = {};
  for (const [i, variant] of s.variants.entries()) {
    const label = `${s.title}${Object.keys(variant).length ? ` ${JSON.stringify(variant)}` : ""}`;
    console.log(`\n== ${label}`);
    const out = path.join(resultsDir, `${name}-${i}.json`);
    const code = `require(${JSON.stringify(path.resolve(s.file))}).${s.fn}(${JSON.stringify(variant)}).then((r) => { console.table(r); require("node:fs").writeFileSync(${JSON.stringify(out)}, JSON.stringify(r)); process.exit(0); }, (e) => { console.error(e); process.exit(1); })`;
    // UV_THREADPOOL_SIZE=1 as every worker has it (hive supervisor), so an in-process baseline runs
    // node-llama-cpp the way a worker does (test/bench/FINDINGS.md §2a).
    const r = spawnSync(process.execPath, ["--import", "tsx", "-e", code], {
      stdio: "inherit",
      env: {
        ...process.env,
        RBEE_BENCH: "1",
        UV_THREADPOOL_SIZE: "1",
        RBEE_CALIBRATE: process.env.RBEE_CALIBRATE ?? "off",
      },
    });
    if (r.status !== 0) {
      failed++;
      console.error(`!! section ${name} failed (exit ${r.status})`);
      continue;
    }
    columns[
      Object.entries(variant)
        .map(([k, v]) => `${k} ${v}`)
        .join(", ") || "result"
    ] = JSON.parse(readFileSync(out, "utf8"));
  }
  if (Object.keys(columns).length > 1) sideBySide.push([s.title, columns]);
}
rmSync(resultsDir, { recursive: true, force: true });
// Sections with several variants (the worker at 1 and 2 threads…) once more, side by side.
for (const [title, columns] of sideBySide) {
  console.log(`\n== Side by side: ${title}`);
  const rows = {};
  for (const [column, result] of Object.entries(columns))
    for (const [key, value] of Object.entries(result)) (rows[key] ??= {})[column] = value;
  console.table(rows);
}
process.exit(failed ? 1 : 0);
