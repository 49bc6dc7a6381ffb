// The .vsix in a real VS Code: `npm run package`, the package unzipped into a fresh folder outside
// the repository (no node_modules reachable), loaded by code-server as the extension, and from inside
// VS Code "rbee: Infer" on a bare SSH node (sshd in a mount namespace without node/npm). The runtime
// is fetched by the extension from a loopback npm registry behind the .npmrc token it is given.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { loadRuntimePins, runtimeSetFor } from "../../extension/src/nodes/runtime-packages";
import { ensureModel } from "../fixtures/models";
import { ensureTestTarballs, startTestRegistry } from "../helpers/npm-registry";
import { startSshdCluster } from "../helpers/sshd";
import { runVsCodeTests } from "./harness";
import { REPO_ROOT } from "./suites";

const TOKEN = "vsix-vscode-token";

test(
  "the .vsix in VS Code: Infer on a bare node deploys the pinned runtime and streams",
  { timeout: 600_000 },
  async () => {
    const work = mkdtempSync(path.join(os.tmpdir(), "rbee-vsix-vscode-"));
    execFileSync("npm", ["run", "package", "--silent"], { cwd: REPO_ROOT, stdio: ["ignore", "ignore", "inherit"] });
    execFileSync("unzip", ["-q", path.join(REPO_ROOT, "rbee.vsix"), "-d", path.join(work, "unpacked")]);
    const extensionDir = path.join(work, "unpacked", "extension");
    const pins = loadRuntimePins(path.join(extensionDir, "dist", "runtime-pins.json"));
    const set = runtimeSetFor({ os: "linux", machine: "x86_64", musl: false, glibc: "2.36", gpus: [] }, pins, {
      withNode: true,
    });
    await ensureTestTarballs([set.node!, ...set.packages]);
    const registry = await startTestRegistry(path.join(work, "registry"), TOKEN);
    const cluster = await startSshdCluster({ nodes: [{ address: "127.0.0.35", bare: true }] });
    const model = readFileSync(ensureModel("tiny"));
    const modelServer = http.createServer((_req, res) => res.end(model));
    await new Promise<void>((r) => modelServer.listen(0, "127.0.0.1", r));
    try {
      const result = await runVsCodeTests({
        name: "vsix",
        extensionDevelopmentPath: extensionDir,
        suite: path.join(REPO_ROOT, "test", "vscode", "suites", "vsix.suite.ts"),
        env: {
          HOME: work,
          RBEE_VSIX_EXTENSION: extensionDir,
          RBEE_TEST_SSH_CONFIG: cluster.sshConfigPath,
          RBEE_TEST_MODEL_URL: `http://127.0.0.1:${(modelServer.address() as AddressInfo).port}/tiny.gguf`,
          NPM_CONFIG_USERCONFIG: registry.npmrc,
          RBEE_TEST_REGISTRY_TOKEN: TOKEN,
          RBEE_NATIVE_BUILD: "off",
          RBEE_CALIBRATE: "off",
        },
        timeoutMs: 540_000,
      });
      const report = () =>
        `exit ${result.exitCode}; output:\n${result.output.join("\n")}\nlogs: ${Object.values(result.logs).join(", ")}`;
      assert.equal(result.exitCode, 0, report());
      for (const name of [
        "the extension runs from the unpacked .vsix",
        "rbee: Infer on a bare node deploys the pinned runtime",
      ])
        assert.ok(
          result.output.some((line) => line.startsWith(`ok - ${name}`)),
          `case did not pass: ${name}\n${report()}`,
        );
      assert.ok(registry.requests.length > 100, "the extension fetched the runtime through its own fetcher");
      const runtimes = readdirSync(path.join(cluster.node("node1").home, ".rbee", "runtime"));
      assert.equal(runtimes.length, 1);
      assert.ok(
        existsSync(path.join(cluster.node("node1").home, ".rbee", "runtime", runtimes[0], "node", "bin", "node")),
      );
    } finally {
      modelServer.close();
      await registry.close();
      await cluster.stop();
      rmSync(work, { recursive: true, force: true });
    }
  },
);
