// When the hive builds llama.cpp for the node's CPU by itself (hive-agent/src/hive/native-builder.ts),
// and what it reports. The build itself takes minutes, so the bench makes it, not the tests.
import { test } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { getPriority, tmpdir } from "node:os";
import { existsSync, readFileSync } from "node:fs";
import { isPidAlive } from "../../hive-agent/src/util/process";
import path from "node:path";
import { findToolchain, NativeBuilder, planNativeBuild } from "../../hive-agent/src/hive/native-builder";
import {
  buildNativeLlama,
  checkNativeBuild,
  nativeBuildStamp,
  nativeEntry,
} from "../../hive-agent/src/worker/native-build";
import type { Logger } from "../../hive-agent/src/util/log";

const cpuNode = { backends: ["cpu" as const], cpu_cores: 8 };
const tools = { cmake: true, cxx: true, npm: true };
const none = { ok: false as const, reason: "no native build" };

test("a CPU node with 3+ cores and the build tools builds; the status says workers use the prebuilt meanwhile", () => {
  const plan = planNativeBuild({ mode: "auto", hardware: cpuNode, threads: 7, toolchain: tools, existing: none });
  assert.equal(plan.build, true);
  assert.equal(plan.status.state, "building");
  assert.match(plan.status.detail, /prebuilt until it is ready/);
});

test("with calibration on, a 1-thread node builds too (calibration decides whether workers use it), but never without the tools", () => {
  const oneThread = {
    hardware: { backends: ["cpu" as const], cpu_cores: 2 },
    threads: 1,
    existing: none,
    calibration: true,
  };
  const plan = planNativeBuild({ mode: "auto", toolchain: tools, ...oneThread });
  assert.deepEqual([plan.build, plan.status.state], [true, "building"]);
  assert.match(plan.status.detail, /calibration then measures it against the prebuilt/);
  const noTools = planNativeBuild({ mode: "auto", toolchain: { cmake: true, cxx: false, npm: true }, ...oneThread });
  assert.deepEqual([noTools.build, noTools.status.state], [false, "skipped"]);
  const off = planNativeBuild({ mode: "off", toolchain: tools, ...oneThread });
  assert.equal(off.build, false, "RBEE_NATIVE_BUILD=off still wins");
  const ready = planNativeBuild({ mode: "auto", toolchain: tools, ...oneThread, existing: { ok: true } });
  assert.match(ready.status.detail, /calibration decides whether CPU workers use it/);
});

test("no build where it would not be used or cannot be made, each with a reason that says what to do", () => {
  const cases = [
    { input: { mode: "off" as const }, reason: /turned off.*rbee nodes build-native/ },
    { input: { hardware: { backends: ["cuda" as const, "cpu" as const], cpu_cores: 32 } }, reason: /GPU \(cuda\)/ },
    {
      input: { hardware: { backends: ["cpu" as const], cpu_cores: 2 }, threads: 1 },
      reason: /2 CPU cores: workers default to 1 thread, and with calibration off they use node-llama-cpp's prebuilt/,
    },
    {
      input: { toolchain: { cmake: false, cxx: true, npm: true } },
      reason: /no cmake on this node; install cmake, then run rbee nodes build-native/,
    },
    {
      input: { toolchain: { cmake: false, cxx: false, npm: true } },
      reason: /no cmake or a C\+\+ compiler on this node; install cmake and a C\+\+ compiler,/,
    },
    { input: { toolchain: { cmake: true, cxx: true, npm: false } }, reason: /no npm on this node; install npm/ },
  ];
  for (const c of cases) {
    const plan = planNativeBuild({
      mode: "auto",
      hardware: cpuNode,
      threads: 7,
      toolchain: tools,
      existing: none,
      ...c.input,
    });
    assert.equal(plan.build, false, JSON.stringify(c.input));
    assert.equal(plan.status.state, "skipped");
    assert.match(plan.status.detail, c.reason);
  }
  // A finished build is ready whatever else holds.
  const ready = planNativeBuild({
    mode: "off",
    hardware: cpuNode,
    threads: 1,
    toolchain: { cmake: false, cxx: false, npm: false },
    existing: { ok: true },
  });
  assert.deepEqual([ready.build, ready.status.state], [false, "ready"]);
});

test("findToolchain looks for cmake, a C++ compiler and npm on the PATH, executables only", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "rbee-path-"));
  try {
    assert.deepEqual(findToolchain(dir), { cmake: false, cxx: false, npm: false });
    writeFileSync(path.join(dir, "cmake"), "#!/bin/sh\n");
    assert.equal(findToolchain(dir).cmake, false, "not executable");
    chmodSync(path.join(dir, "cmake"), 0o755);
    writeFileSync(path.join(dir, "clang++"), "#!/bin/sh\n", { mode: 0o755 });
    assert.deepEqual(findToolchain(`/nonexistent${path.delimiter}${dir}`), { cmake: true, cxx: true, npm: false });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

const quiet: Logger = { debug() {}, info() {}, warn() {}, error() {} };

test("a build stamped for this package and CPU is ready, and a hive sees one made by hand while it runs", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "rbee-native-"));
  try {
    const builder = new NativeBuilder(dir, "auto", quiet);
    builder.start(
      {
        backends: ["cpu"],
        devices: [],
        cpu_cores: 2,
        ram_total_bytes: 1,
        ram_free_bytes: 1,
        platform: "linux",
        arch: "x64",
      },
      1,
      tools,
    );
    assert.equal(builder.status().state, "skipped");
    const before = checkNativeBuild(dir);
    assert.match(before.ok ? "" : before.reason, /no native build/);

    // What `rbee hive build-native` leaves behind.
    mkdirSync(path.dirname(nativeEntry(dir)), { recursive: true });
    writeFileSync(nativeEntry(dir), "export {};\n");
    writeFileSync(path.join(dir, "rbee-native-build.json"), nativeBuildStamp({ GGML_OPENMP: "ON" }));
    assert.deepEqual(checkNativeBuild(dir), { ok: true, cmakeOptions: { GGML_OPENMP: "ON" } });
    assert.equal(builder.status().state, "ready");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("two builds never run in one folder: the second is refused while the first's process lives; a dead one's lock is taken over", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "rbee-native-"));
  try {
    // A live process (this one's parent) holds the lock.
    writeFileSync(path.join(dir, "build.lock"), String(process.ppid));
    const refused = await buildNativeLlama({ dir, cmakeOptions: { GGML_OPENMP: "ON" } });
    assert.equal(refused.ok, false);
    assert.match(refused.error ?? "", new RegExp(`another native build is running in .* \\(pid ${process.ppid}\\)`));

    // A lock from a process that is gone does not block. The build then fails fast (a package with
    // nothing to build), which proves it got past the lock, and released it.
    writeFileSync(path.join(dir, "build.lock"), "999999999");
    const emptyPackage = path.join(dir, "modules", "node-llama-cpp");
    mkdirSync(emptyPackage, { recursive: true });
    writeFileSync(
      path.join(emptyPackage, "package.json"),
      JSON.stringify({ name: "node-llama-cpp", version: "0.0.0" }),
    );
    const attempted = await buildNativeLlama({
      dir: path.join(dir),
      packageDir: emptyPackage,
      cmakeOptions: { GGML_OPENMP: "ON" },
      timeoutMs: 60_000,
    });
    assert.equal(attempted.ok, false);
    assert.match(attempted.error ?? "", /the native build failed/);
    assert.throws(() => rmSync(path.join(dir, "build.lock")), /ENOENT/, "the lock is released");

    // A package that cannot be read is a failed build with a reason, not an exception.
    const unreadable = await buildNativeLlama({ dir, packageDir: path.join(dir, "nothing-here"), cmakeOptions: {} });
    assert.match(unreadable.error ?? "", /cannot read the node-llama-cpp package/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a background build runs at the lowest priority, and stopping it ends its whole process group and frees the lock", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "rbee-native-"));
  const lock = path.join(dir, "build.lock");
  const stop = new AbortController();
  try {
    const build = buildNativeLlama({ dir, cmakeOptions: { GGML_OPENMP: "ON" }, niceness: 19, signal: stop.signal });
    // The lock names the build process once it is spawned (it copies the package first).
    let pid = 0;
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      const owner = existsSync(lock) ? Number(readFileSync(lock, "utf8").trim()) : 0;
      if (owner && owner !== process.pid) {
        pid = owner;
        break;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(pid, "the build process was started");
    assert.equal(getPriority(pid), 19);
    stop.abort();
    const result = await build;
    assert.equal(result.ok, false);
    assert.match(result.error ?? "", /stopped/);
    assert.equal(isPidAlive(pid), false, "the build process is gone");
    assert.throws(() => readFileSync(lock), /ENOENT/, "the lock is released");
  } finally {
    stop.abort();
    rmSync(dir, { recursive: true, force: true });
  }
});
