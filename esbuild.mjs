// Bundles each entry point into one CommonJS file under dist/.
// node-llama-cpp stays external: it carries native binaries and is installed next to the bundle.
import * as esbuild from "esbuild";
import { existsSync } from "node:fs";

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
