// The sh scripts the keeper runs on nodes (extension/src/nodes/scripts, run by remote-scripts.ts): the
// command line it builds is run here by a real sh, as a node's login shell would, with values that
// would break a script they were spliced into; and the bundles carry exactly the files that tsx reads.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync, existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseKv, scriptCommand, type ScriptName } from "../../extension/src/nodes/remote-scripts";

const SCRIPTS = path.resolve(__dirname, "../../extension/src/nodes/scripts");
const names = readdirSync(SCRIPTS)
  .filter((f) => f.endsWith(".sh") && f !== "common.sh")
  .map((f) => f.slice(0, -3));

/** Runs the command line through sh -c, as sshd hands it to the user's shell, with RBEE_HOME in a temp folder. */
function runLocally(command: string, home: string, stdin?: string) {
  return spawnSync("sh", ["-c", command], {
    input: stdin,
    encoding: "utf8",
    env: { ...process.env, HOME: home, RBEE_HOME: path.join(home, ".rbee") },
  });
}

test("values reach a script as one argument each, never as script text", (t) => {
  const home = mkdtempSync(path.join(os.tmpdir(), "rbee-scripts-"));
  t.after(() => rmSync(home, { recursive: true, force: true }));
  const hostile = `it's "a" $(touch ${home}/pwned) \`touch ${home}/pwned2\` ; touch ${home}/pwned3 \\ end`;
  const dir = path.join(home, hostile.replace(/\//g, "_"));
  mkdirSync(dir);
  writeFileSync(path.join(dir, ".complete"), `runtime=x\nnode=/opt/node with space/bin/node\n`);
  const r = runLocally(scriptCommand("agent-node", [dir]), home);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, "/opt/node with space/bin/node\n");
  assert.deepEqual(
    readdirSync(home).filter((f) => f.startsWith("pwned")),
    [],
    "nothing in the value was run",
  );

  // An empty value stays an argument (probe-state's version "-" and the like keep their positions).
  const probe = runLocally(scriptCommand("probe-state", [hostile, "", "no"]), home);
  assert.equal(probe.status, 0, probe.stderr);
  const kv = parseKv(probe.stdout);
  assert.equal(kv.get("root")?.[0], path.join(home, ".rbee"));
  assert.equal(kv.get("node")?.[0], "", "an empty command name finds no node");
  assert.deepEqual(
    readdirSync(home).filter((f) => f.startsWith("pwned")),
    [],
  );
});

test("a secret travels on stdin and lands in a private file; the deploy lock is taken and given back by its owner only", (t) => {
  const home = mkdtempSync(path.join(os.tmpdir(), "rbee-scripts-"));
  t.after(() => rmSync(home, { recursive: true, force: true }));
  const token = "s3cr3t-token-value";
  const cmd = scriptCommand("hive-token-write");
  assert.ok(!cmd.includes(token));
  assert.equal(runLocally(cmd, home, token).status, 0);
  const file = path.join(home, ".rbee/hive/token");
  assert.equal(readFileSync(file, "utf8"), token);
  assert.equal(execFileSync("stat", ["-c", "%a", file], { encoding: "utf8" }).trim(), "600");
  assert.equal(runLocally(scriptCommand("hive-token-read"), home).stdout, token);

  assert.equal(runLocally(scriptCommand("lock-acquire", ["owner-a", 2]), home).status, 0);
  assert.equal(
    runLocally(scriptCommand("lock-refresh", ["owner-b"]), home).stdout.trim(),
    "lost",
    "another owner's lock is not refreshed",
  );
  runLocally(scriptCommand("lock-release", ["owner-b"]), home);
  assert.ok(existsSync(path.join(home, ".rbee/deploy.lock")), "nor released");
  runLocally(scriptCommand("lock-release", ["owner-a"]), home);
  assert.ok(!existsSync(path.join(home, ".rbee/deploy.lock")));
});

test("every script file is one the keeper can name, and the bundles carry the files as they are", () => {
  // The ScriptName union and the folder agree: a script nobody runs, or a name with no file, fails here.
  const named: Record<ScriptName, true> = {
    "agent-activate": true,
    "agent-finish": true,
    "agent-node": true,
    "agent-restore": true,
    "agent-tmp": true,
    "cleanup-old": true,
    "hive-log": true,
    "hive-start": true,
    "hive-stop": true,
    "hive-token-read": true,
    "hive-token-write": true,
    "lock-acquire": true,
    "lock-refresh": true,
    "lock-release": true,
    "probe-platform": true,
    "probe-state": true,
    "runtime-clear": true,
    "runtime-copy-finish": true,
    "runtime-intact": true,
    "runtime-tmp": true,
    "runtime-unpack": true,
    uninstall: true,
    untar: true,
  };
  assert.deepEqual(Object.keys(named).sort(), [...names].sort());
  // test/run.mjs built dist/ before this ran: the CLI bundle holds each script's exact text, as esbuild
  // prints a string (a "…", '…' or `…` literal, whichever needs fewer escapes).
  const bundle = readFileSync(path.resolve(__dirname, "../../dist/cli.js"), "utf8");
  const asLiteral = (text: string) => {
    const escaped = text.replace(/\\/g, "\\\\");
    return [
      JSON.stringify(text).slice(1, -1),
      escaped.replace(/'/g, "\\'").replace(/\n/g, "\\n"),
      escaped.replace(/`/g, "\\`").replace(/\$\{/g, "\\${"),
    ];
  };
  for (const n of [...names, "common"]) {
    const text = readFileSync(path.join(SCRIPTS, `${n}.sh`), "utf8");
    assert.ok(
      asLiteral(text).some((l) => bundle.includes(l)),
      `${n}.sh is in dist/cli.js`,
    );
  }
});

test("shellcheck finds nothing in common.sh + each script (skipped where shellcheck is not installed)", (t) => {
  if (spawnSync("shellcheck", ["--version"]).status !== 0)
    return t.skip("shellcheck is not installed (apt-get install shellcheck)");
  const common = readFileSync(path.join(SCRIPTS, "common.sh"), "utf8");
  for (const n of names) {
    const r = spawnSync("shellcheck", ["-s", "sh", "-S", "style", "-"], {
      input: `${common}\n${readFileSync(path.join(SCRIPTS, `${n}.sh`), "utf8")}`,
      encoding: "utf8",
    });
    assert.equal(r.status, 0, `${n}.sh:\n${r.stdout}`);
  }
});
