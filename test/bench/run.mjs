// `npm run bench`: builds, then runs each benchmark section in its own process, one after the other
// (they would disturb each other's timings), and prints every figure with the ratio it is judged by.
// `npm run bench -- worker keeper` runs the named sections only.
import { spawnSync } from "node:child_process";
import path from "node:path";

const root = path.resolve(import.meta.dirname, "..", "..");
process.chdir(root);

const SECTIONS = {
  worker: { file: "test/bench/worker.bench.ts", fn: "benchWorker", title: "Worker SSE vs in-process node-llama-cpp (small model)", variants: [{ threads: 1 }, { threads: 2 }] },
  keeper: { file: "test/bench/keeper.bench.ts", fn: "benchKeeper", title: "Keeper: warm rbee infer, tokens/s through the keeper", variants: [{ threads: 1 }] },
  peer: { file: "test/bench/peer.bench.ts", fn: "benchPeer", title: "Worker SSE vs llama-server, same model and threads (small model)", variants: [{ threads: 1 }, { threads: 2 }] },
  registry: { file: "test/bench/registry.bench.ts", fn: "benchRegistry", title: "Registry (sql.js)", variants: [{}] },
  ssh: { file: "test/bench/ssh.bench.ts", fn: "benchSsh", title: "SSH transport and deploy", variants: [{}] },
  deploy: { file: "test/bench/deploy.bench.ts", fn: "benchDeploy", title: "Install path: bare-node deploy with the pinned runtime, no-op re-deploy, local hive from a .vsix", variants: [{}] },
  gateway: { file: "test/bench/gateway.bench.ts", fn: "benchGateway", title: "Gateway: rbee serve vs the worker directly; 8 clients over two nodes vs one", variants: [{}] },
  inline: { file: "test/bench/inline.bench.ts", fn: "benchInline", title: "Inline completions: engine overhead over the worker, cache hits", variants: [{ preset: "tiny" }, { preset: "small" }] },
  typing: { file: "test/bench/typing.bench.ts", fn: "benchTyping", title: "Typing replay: keystroke → ghost text, worker vs llama-server /infill (small model), per 100 keystrokes", variants: [{ threads: 1 }] },
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
for (const [name, s] of Object.entries(SECTIONS)) {
  if (wanted.length && !wanted.includes(name)) continue;
  for (const variant of s.variants) {
    const label = `${s.title}${Object.keys(variant).length ? ` ${JSON.stringify(variant)}` : ""}`;
    console.log(`\n== ${label}`);
    const code = `require(${JSON.stringify(path.resolve(s.file))}).${s.fn}(${JSON.stringify(variant)}).then((r) => { console.table(r); process.exit(0); }, (e) => { console.error(e); process.exit(1); })`;
    // UV_THREADPOOL_SIZE=1 as every worker has it (hive supervisor), so an in-process baseline runs
    // node-llama-cpp the way a worker does (test/bench/FINDINGS.md §2a).
    const r = spawnSync(process.execPath, ["--import", "tsx", "-e", code], { stdio: "inherit", env: { ...process.env, RBEE_BENCH: "1", UV_THREADPOOL_SIZE: "1", RBEE_CALIBRATE: process.env.RBEE_CALIBRATE ?? "off" } });
    if (r.status !== 0) {
      failed++;
      console.error(`!! section ${name} failed (exit ${r.status})`);
    }
  }
}
process.exit(failed ? 1 : 0);
