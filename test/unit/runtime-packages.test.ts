// Which node-llama-cpp prebuilts a node gets, what a runtime copy contains, and shell quoting of
// every value interpolated into remote commands.

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { prebuiltPackagesFor, runtimeClosure, nodeJsPlatform } from "../../extension/src/nodes/runtime-packages";
import { NodeError } from "../../extension/src/nodes/errors";
import { shQuote } from "../../extension/src/nodes/shell";

const linux = (machine: string, gpus: ("cuda" | "vulkan" | "metal")[] = [], musl = false) => ({
  os: "linux",
  machine,
  musl,
  gpus,
});

test("Linux x64: the CPU prebuilt always, CUDA (with its -ext) when nvidia-smi works, Vulkan when vulkaninfo does", () => {
  assert.deepEqual(prebuiltPackagesFor(linux("x86_64")), {
    packages: ["@node-llama-cpp/linux-x64"],
    backends: ["cpu"],
  });
  assert.deepEqual(prebuiltPackagesFor(linux("x86_64", ["cuda", "vulkan"])), {
    packages: [
      "@node-llama-cpp/linux-x64",
      "@node-llama-cpp/linux-x64-cuda",
      "@node-llama-cpp/linux-x64-cuda-ext",
      "@node-llama-cpp/linux-x64-vulkan",
    ],
    backends: ["cpu", "cuda", "vulkan"],
  });
  assert.deepEqual(prebuiltPackagesFor(linux("aarch64")).packages, ["@node-llama-cpp/linux-arm64"]);
  assert.deepEqual(prebuiltPackagesFor(linux("armv7l")).packages, ["@node-llama-cpp/linux-armv7l"]);
});

test("macOS: Metal on Apple silicon, CPU on Intel", () => {
  assert.deepEqual(prebuiltPackagesFor({ os: "darwin", machine: "arm64", musl: false, gpus: ["metal"] }), {
    packages: ["@node-llama-cpp/mac-arm64-metal"],
    backends: ["metal", "cpu"],
  });
  assert.deepEqual(prebuiltPackagesFor({ os: "darwin", machine: "x86_64", musl: false, gpus: [] }).packages, [
    "@node-llama-cpp/mac-x64",
  ]);
  assert.deepEqual(nodeJsPlatform({ os: "darwin", machine: "arm64", musl: false, gpus: [] }), {
    platform: "darwin",
    arch: "arm64",
  });
});

test("platforms without a prebuilt are UNSUPPORTED_PLATFORM naming what was found", () => {
  for (const p of [
    linux("x86_64", [], true),
    { os: "freebsd", machine: "amd64", musl: false, gpus: [] },
    linux("s390x"),
  ]) {
    assert.throws(
      () => prebuiltPackagesFor(p),
      (e: unknown) =>
        e instanceof NodeError &&
        e.code === "UNSUPPORTED_PLATFORM" &&
        e.message.includes(p.machine) &&
        /rbee runs on Linux/.test(e.message),
    );
  }
});

test("runtime closure of the installed node-llama-cpp: its dependencies and the chosen prebuilt, no other prebuilt", () => {
  const nm = path.resolve(__dirname, "..", "..", "node_modules");
  const rels = runtimeClosure(nm, ["@node-llama-cpp/linux-x64"]);
  assert.ok(rels.includes("node-llama-cpp"));
  assert.ok(rels.includes(path.join("@node-llama-cpp", "linux-x64")));
  assert.ok(
    !rels.some((r) => r.includes("linux-x64-cuda") || r.includes("linux-x64-vulkan")),
    "only the prebuilt asked for",
  );
  for (const dep of ["chalk", "lifecycle-utils", "@huggingface/jinja"])
    assert.ok(rels.includes(dep), `${dep} is a runtime dependency`);
  assert.throws(
    () => runtimeClosure(nm, ["@node-llama-cpp/not-a-platform"]),
    (e: unknown) => e instanceof NodeError && e.code === "DEPLOY_BUNDLE_MISSING",
  );
});

test("runtime closure resolves nested node_modules like require and skips absent optional dependencies", (t) => {
  const nm = mkdtempSync(path.join(os.tmpdir(), "rbee-closure-"));
  t.after(() => rmSync(nm, { recursive: true, force: true }));
  const pkg = (dir: string, json: object) => {
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, "package.json"), JSON.stringify(json));
  };
  pkg(path.join(nm, "node-llama-cpp"), {
    name: "node-llama-cpp",
    dependencies: { a: "1", b: "1" },
    optionalDependencies: { "@node-llama-cpp/linux-x64-cuda": "1", "opt-present": "1", "opt-absent": "1" },
  });
  pkg(path.join(nm, "a"), { name: "a", dependencies: { c: "2" } });
  pkg(path.join(nm, "a", "node_modules", "c"), { name: "c", version: "2" }); // a's own c@2 travels inside a
  pkg(path.join(nm, "b"), { name: "b", dependencies: { c: "1" } });
  pkg(path.join(nm, "c"), { name: "c", version: "1" });
  pkg(path.join(nm, "opt-present"), { name: "opt-present" });
  pkg(path.join(nm, "unrelated"), { name: "unrelated" });
  pkg(path.join(nm, "@node-llama-cpp", "linux-x64"), { name: "@node-llama-cpp/linux-x64" });
  pkg(path.join(nm, "@node-llama-cpp", "linux-x64-cuda"), { name: "@node-llama-cpp/linux-x64-cuda" });
  assert.deepEqual(runtimeClosure(nm, ["@node-llama-cpp/linux-x64"]), [
    path.join("@node-llama-cpp", "linux-x64"),
    "a",
    "b",
    "c",
    "node-llama-cpp",
    "opt-present",
  ]);
  // A missing required dependency is an error, not half a runtime.
  rmSync(path.join(nm, "b"), { recursive: true });
  assert.throws(
    () => runtimeClosure(nm, []),
    (e: unknown) => e instanceof NodeError && /b is not installed/.test(e.message),
  );
});

test("shQuote: what sh receives is exactly the original string", () => {
  const samples = [
    "plain",
    "with space",
    "it's",
    "$HOME",
    "`id`",
    'a"b',
    "semi;colon",
    "new\nline",
    "back\\slash",
    "*?[]",
    "",
    "-n",
    "ünïcode",
  ];
  for (const s of samples) {
    const out = execFileSync("sh", ["-c", `printf '%s' ${shQuote(s)}`], { encoding: "utf8" });
    assert.equal(out, s, `round trip of ${JSON.stringify(s)}`);
  }
  assert.equal(shQuote("/abs/path-1.2_x"), "/abs/path-1.2_x", "safe words stay readable");
  assert.throws(() => shQuote("nul\0byte"));
});
