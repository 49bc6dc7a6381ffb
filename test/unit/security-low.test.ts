// Low-severity findings of the security review (docs/security.md), each reproduced on the real code.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHmac, randomBytes } from "node:crypto";
import { execFileSync } from "node:child_process";
import { renderMarkdown } from "../../extension/src/ui-core/chat/markdown";
import { checkHostKeyText, hostFieldMatches } from "../../extension/src/nodes/known-hosts";
import { childEnv } from "../../hive-agent/src/util/env";

/** Runs `code` in a child process and returns what it prints; fails if it is not done within `limitMs` (a hang, not a speed check). */
function inChild(code: string, limitMs: number): Promise<string> {
  try {
    return Promise.resolve(
      execFileSync(process.execPath, ["--import", "tsx", "-e", code], {
        encoding: "utf8",
        timeout: limitMs,
        cwd: __dirname,
      }).trim(),
    );
  } catch (e) {
    return Promise.reject(
      new Error(`did not finish within ${limitMs} ms (super-linear work?): ${(e as Error).message}`),
    );
  }
}

test("markdown-quote-recursion: 20 000 nested '>' render without a stack overflow", () => {
  const html = renderMarkdown(">".repeat(20_000) + " deep");
  assert.match(html, /deep/);
  assert.ok((html.match(/<blockquote>/g) ?? []).length <= 9, "quotes nest without bound");
});

test("markdown-link-regex: 400 000 '[' render in linear time (the old pattern needed minutes)", async () => {
  const mod = require.resolve("../../extension/src/ui-core/chat/markdown");
  const out = await inChild(
    `const { renderMarkdown } = require(${JSON.stringify(mod)});
     const a = renderMarkdown("[".repeat(400000)); const b = renderMarkdown("[a](b".repeat(80000)); console.log(a.length + b.length);`,
    60_000,
  );
  assert.ok(Number(out) > 0);
});

test("known-hosts-hashed-case: a hashed entry matches the host name whatever its case, as OpenSSH does", () => {
  const salt = randomBytes(20);
  const field = `|1|${salt.toString("base64")}|${createHmac("sha1", salt).update("gpu1.example.org").digest("base64")}`;
  assert.ok(hostFieldMatches(field, "GPU1.Example.org"));
  const key = Buffer.concat([
    Buffer.from([0, 0, 0, 11]),
    Buffer.from("ssh-ed25519"),
    Buffer.from([0, 0, 0, 32]),
    randomBytes(32),
  ]);
  const check = checkHostKeyText(
    [{ path: "kh", text: `${field} ssh-ed25519 ${key.toString("base64")}\n` }],
    "Gpu1.EXAMPLE.org",
    key,
  );
  assert.equal(check.status, "match");
});

test("host-pattern-backtracking: a known_hosts pattern like *a*a*…*b is matched without exponential backtracking", async () => {
  const mod = require.resolve("../../extension/src/nodes/known-hosts");
  const out = await inChild(
    `const { hostFieldMatches } = require(${JSON.stringify(mod)});
     console.log(hostFieldMatches("*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b", "a".repeat(200)));`,
    60_000,
  );
  assert.equal(out, "false");
  assert.ok(hostFieldMatches("gpu?.*.example.org,!gpu9.lab.example.org", "gpu1.lab.example.org"));
  assert.ok(!hostFieldMatches("gpu?.*.example.org,!gpu9.lab.example.org", "gpu9.lab.example.org"));
  assert.ok(hostFieldMatches("*", "anything"));
});

test("env-secrets: processes rbee starts get the basics and GPU settings, not the parent's secrets", () => {
  const env = childEnv(
    {
      PATH: "/usr/bin",
      HOME: "/home/u",
      AWS_SECRET_ACCESS_KEY: "aws",
      GITHUB_TOKEN: "gh",
      OPENAI_API_KEY: "oa",
      HF_TOKEN: "hf",
      CUDA_VISIBLE_DEVICES: "1",
      LC_ALL: "C",
      RBEE_HIVE_TOKEN: "t",
      RBEE_HIVE_ARGS: "--x",
    },
    { UV_THREADPOOL_SIZE: "1" },
  );
  assert.deepEqual(env, {
    PATH: "/usr/bin",
    HOME: "/home/u",
    CUDA_VISIBLE_DEVICES: "1",
    LC_ALL: "C",
    RBEE_HIVE_ARGS: "--x",
    UV_THREADPOOL_SIZE: "1",
  });
  assert.equal(childEnv({ HF_TOKEN: "hf", AWS_SECRET_ACCESS_KEY: "aws" }, {}, ["HF_TOKEN"]).HF_TOKEN, "hf");
});
