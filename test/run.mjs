// The project's test command: builds the bundles, then runs every *.test.ts under test/ with
// node's built-in runner (which prints the summary CI reads). `node test/run.mjs unit` runs one folder;
// `node test/run.mjs path/to/x.test.ts` runs named files.
import { spawnSync } from "node:child_process";
import { readdirSync, statSync, existsSync } from "node:fs";
import path from "node:path";

const root = path.resolve(import.meta.dirname, "..");
process.chdir(root);

function collect(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) out.push(...collect(p));
    else if (name.endsWith(".test.ts")) out.push(p);
  }
  return out;
}

const args = process.argv.slice(2);
// The VS Code suite has its own runner (it drives a real VS Code); it is one folder among the others.
const suites = args.length ? args : ["unit", "integration", "vscode"];
// A named suite or file that does not exist is an error: dropping it silently would report a green run
// that tested less than asked.
const missing = suites.filter((s) => !existsSync(s.endsWith(".ts") ? s : path.join("test", s)));
if (missing.length) {
  console.error(
    `no such test suite or file: ${missing.join(", ")} (suites are folders under test/: unit, integration, vscode)`,
  );
  process.exit(2);
}
const files = suites.flatMap((s) => (s.endsWith(".ts") ? [s] : collect(path.join("test", s))));
if (!files.length) {
  console.error(`no test files found for: ${suites.join(" ")}`);
  process.exit(1);
}

const build = spawnSync(process.execPath, ["esbuild.mjs"], { stdio: "inherit" });
if (build.status !== 0) process.exit(build.status ?? 1);

const r = spawnSync(
  process.execPath,
  ["--import", "tsx", "--test", "--test-concurrency=1", "--test-timeout=300000", ...files],
  {
    stdio: "inherit",
    env: {
      ...process.env,
      RBEE_TEST: "1",
      RBEE_NATIVE_BUILD: process.env.RBEE_NATIVE_BUILD ?? "off",
      RBEE_CALIBRATE: process.env.RBEE_CALIBRATE ?? "off",
    },
  },
);
process.exit(r.status ?? 1);
