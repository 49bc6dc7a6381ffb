// Bundles each entry point into one CommonJS file under dist/.
// node-llama-cpp stays external: it carries native binaries and is installed next to the bundle.
import * as esbuild from "esbuild";
import { copyFileSync, existsSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";

const entries = [
  { in: "hive-agent/src/main.ts", out: "dist/hive-agent.js", banner: "#!/usr/bin/env node" },
  { in: "extension/src/cli.ts", out: "dist/cli.js", banner: "#!/usr/bin/env node" },
  { in: "extension/src/extension.ts", out: "dist/extension.js", external: ["vscode"] },
];

const watch = process.argv.includes("--watch");
for (const e of entries) {
  if (!existsSync(e.in)) continue; // entry points arrive issue by issue
  const options = {
    entryPoints: [e.in],
    outfile: e.out,
    bundle: true,
    platform: "node",
    target: "node20",
    format: "cjs",
    sourcemap: "linked",
    external: ["node-llama-cpp", "cpu-features", ...(e.external ?? [])],
    banner: e.banner ? { js: e.banner } : undefined,
    logLevel: "warning",
  };
  if (watch) await (await esbuild.context(options)).watch();
  else await esbuild.build(options);
}

// sql.js's JS is bundled but its WebAssembly is not: the registry looks for it next to the bundles
// (extension/src/keeper/registry-sqljs.ts).
mkdirSync("dist", { recursive: true });
copyFileSync(createRequire(import.meta.url).resolve("sql.js/dist/sql-wasm.wasm"), "dist/sql-wasm.wasm");
