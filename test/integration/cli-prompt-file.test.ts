// Low finding of docs/security.md: a prompt given with --prompt is visible to every local user in `ps`;
// --prompt-file (and --prompt -, stdin) keep it out of the command line.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { ensureModel } from "../fixtures/models";
import { newRbeeHome, runCli, startCli } from "../helpers/cli";

const model = `file:${ensureModel("tiny")}`;
const home = newRbeeHome();
const env = { RBEE_HOME: home };
after(async () => {
  await runCli(["hive", "stop"], env);
  rmSync(home, { recursive: true, force: true });
});

test("prompt-in-ps: --prompt-file keeps the prompt out of the command line and generates from it", async () => {
  const secret = "def confidential_pricing_model_v7(): # internal";
  const file = path.join(home, "prompt.txt");
  writeFileSync(file, secret);
  const run = startCli(
    [
      "infer",
      "--model",
      model,
      "--prompt-file",
      file,
      "--max-tokens",
      "3000",
      "--seed",
      "9",
      "--threads",
      "1",
      "--json",
    ],
    env,
  );
  // While it runs, what `ps` shows of it (its /proc cmdline) holds the file name, never the prompt.
  const cmdline = readFileSync(`/proc/${run.proc.pid}/cmdline`, "utf8").split("\0").join(" ");
  assert.ok(cmdline.includes("--prompt-file"), cmdline);
  assert.ok(!cmdline.includes("confidential_pricing_model"), "the prompt is visible in ps");
  const done = await run.done;
  assert.equal(done.code, 0, done.stderr);
  const fromFile = JSON.parse(done.stdout);
  // The same prompt given inline gives the same text: the file's content was the prompt.
  const inline = JSON.parse(
    (
      await runCli(
        [
          "infer",
          "--model",
          model,
          "--prompt",
          secret,
          "--max-tokens",
          "3000",
          "--seed",
          "9",
          "--threads",
          "1",
          "--json",
        ],
        env,
      )
    ).stdout,
  );
  assert.equal(fromFile.tokens_out, 3000);
  assert.equal(fromFile.text, inline.text);
});
