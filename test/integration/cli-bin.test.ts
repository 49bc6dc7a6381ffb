// `rbee` as README's "Using the CLI" tells users to call it: package.json's bin run directly (what
// `npm link` puts on PATH) and through `npx rbee` inside the checkout; `--version` and the usage exit code.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { accessSync, constants, readFileSync } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { AGENT_BUNDLE, REPO_ROOT } from "../helpers/hive";
import { CLI_BUNDLE, newRbeeHome, runCli } from "../helpers/cli";

const run = promisify(execFile);
const pkg = JSON.parse(readFileSync(path.join(REPO_ROOT, "package.json"), "utf8")) as {
  version: string;
  bin: Record<string, string>;
};
const env = { RBEE_HOME: newRbeeHome() };

describe("rbee as users call it", () => {
  test("rbee --version prints package.json's version, the same as the hive-agent it deploys", async () => {
    const r = await runCli(["--version"], env);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `${pkg.version}\n`);
    assert.equal(r.stderr, "");
    const agent = await run(process.execPath, [AGENT_BUNDLE, "--version"]);
    assert.equal(agent.stdout, `${pkg.version}\n`);
  });

  test("the bin is dist/cli.js, a #! program that runs on its own (what npm link puts on PATH)", async () => {
    assert.equal(path.resolve(REPO_ROOT, pkg.bin.rbee), CLI_BUNDLE);
    assert.match(readFileSync(CLI_BUNDLE, "utf8").split("\n")[0], /^#!\/usr\/bin\/env node$/);
    accessSync(CLI_BUNDLE, constants.X_OK);
    const r = await run(CLI_BUNDLE, ["--version"], { env: { ...process.env, ...env } });
    assert.equal(r.stdout, `${pkg.version}\n`);
  });

  test("npx rbee runs the checkout's CLI without installing anything", async () => {
    const r = await run("npx", ["--no-install", "rbee", "--version"], {
      cwd: REPO_ROOT,
      env: { ...process.env, ...env },
    });
    assert.equal(r.stdout.trim(), pkg.version);
  });

  test("usage errors exit 2 with the usage on stderr; no command prints the usage and exits 0", async () => {
    const bad = await runCli(["frobnicate"], env);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /unknown command "frobnicate"/);
    assert.match(bad.stderr, /usage: rbee <command>/);
    assert.equal((await runCli(["infer", "--no-such-option"], env)).code, 2);
    const none = await runCli([], env);
    assert.equal(none.code, 0);
    assert.match(none.stdout, /--version/);
  });
});
