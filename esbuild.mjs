// Bundles each entry point into one CommonJS file under dist/.
// node-llama-cpp stays external: it carries native binaries and is installed next to the bundle.
import * as esbuild from "esbuild";
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { generateRuntimePins } from "./extension/build/runtime-pins.mjs";
import { createRequire } from "node:module";

const entries = [
  { in: "hive-agent/src/main.ts", out: "dist/hive-agent.js", banner: "#!/usr/bin/env node" },
  { in: "extension/src/cli.ts", out: "dist/cli.js", banner: "#!/usr/bin/env node" },
  { in: "extension/src/extension.ts", out: "dist/extension.js", external: ["vscode"] },
];

const watch = process.argv.includes("--watch");
// RBEE_BUILD_VERSION lets a test build an agent of another version (upgrade and mismatch tests).
const version = process.env.RBEE_BUILD_VERSION ?? JSON.parse(readFileSync("package.json", "utf8")).version;
const outDir = process.env.RBEE_BUILD_OUT;
// The sh scripts the keeper runs on SSH nodes, by name, inlined into the bundles so that dist/ and the
// .vsix need no files for them (read by extension/src/nodes/remote-scripts.ts; source run through tsx
// reads the files themselves).
const nodeScriptsDir = "extension/src/nodes/scripts";
const nodeScripts = Object.fromEntries(
  readdirSync(nodeScriptsDir)
    .filter((f) => f.endsWith(".sh"))
    .map((f) => [f.slice(0, -3), readFileSync(`${nodeScriptsDir}/${f}`, "utf8")]),
);
for (const e of entries) {
  // A missing entry is an error: skipping it would leave a stale or absent bundle behind a green build.
  if (!existsSync(e.in)) throw new Error(`esbuild.mjs: entry point ${e.in} does not exist (update the entries list)`);
  const options = {
    entryPoints: [e.in],
    outfile: outDir ? e.out.replace(/^dist\//, outDir + "/") : e.out,
    bundle: true,
    platform: "node",
    target: "node20",
    format: "cjs",
    sourcemap: "linked",
    // ssh2 falls back to pure JS when its optional native crypto addon cannot be loaded.
    external: ["node-llama-cpp", "cpu-features", "*.node", ...(e.external ?? [])],
    banner: e.banner ? { js: e.banner } : undefined,
    define: { __RBEE_VERSION__: JSON.stringify(version), __RBEE_NODE_SCRIPTS__: JSON.stringify(nodeScripts) },
    logLevel: "warning",
  };
  if (watch) await (await esbuild.context(options)).watch();
  else await esbuild.build(options);
  // A bundle with a #! line is a program (package.json's bin "rbee" is dist/cli.js): keep it executable
  // after every build, so a `npm link`ed rbee keeps working.
  if (e.banner && existsSync(options.outfile)) chmodSync(options.outfile, 0o755);
}

// sql.js's JS is bundled but its WebAssembly is not: the registry looks for it next to the bundles
// (extension/src/keeper/registry-sqljs.ts).
mkdirSync(outDir ?? "dist", { recursive: true });
copyFileSync(createRequire(import.meta.url).resolve("sql.js/dist/sql-wasm.wasm"), `${outDir ?? "dist"}/sql-wasm.wasm`);

// The runtime set the keeper may download for nodes and the local hive, with the integrity hashes
// it verifies them against (extension/build/runtime-pins.mjs).
const pins = generateRuntimePins(
  JSON.parse(readFileSync("package-lock.json", "utf8")),
  JSON.parse(readFileSync("extension/runtime-node.json", "utf8")),
);
writeFileSync(`${outDir ?? "dist"}/runtime-pins.json`, JSON.stringify(pins) + "\n");
