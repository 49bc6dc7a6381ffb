// The extension host loads the test module with Node's require: it cannot read TypeScript, and the
// module imports the bridge client and host runner from this folder. esbuild bundles it into one
// CommonJS file with `vscode` left to the extension host, which provides it.
import { writeFileSync } from "node:fs";
import path from "node:path";
import * as esbuild from "esbuild";

/**
 * Bundles `entry` (a .ts or .js module exporting run()) into `outDir`; returns the path to give VS
 * Code as extensionTestsPath.
 */
export async function bundleSuite(entry: string, outDir: string): Promise<string> {
  const name = path.basename(entry).replace(/\.[cm]?[jt]s$/, "");
  const bundle = path.join(outDir, `${name}.bundle.js`);
  await esbuild.build({
    entryPoints: [entry],
    outfile: bundle,
    bundle: true,
    platform: "node",
    target: "node20",
    format: "cjs",
    external: ["vscode"],
    sourcemap: "inline",
    logLevel: "warning",
  });
  // Node maps stack traces only for modules loaded after source maps are switched on, so a small
  // entry module switches them on and then loads the bundle: failures point at the .ts lines.
  const loader = path.join(outDir, `${name}.js`);
  writeFileSync(
    loader,
    `"use strict";\nprocess.setSourceMapsEnabled(true);\nmodule.exports = require(${JSON.stringify(bundle)});\n`,
  );
  return loader;
}
