// rbee in a real VS Code on a node with two GPUs: the local hive, started by the extension host, sees
// two software Vulkan devices (test/helpers/lavapipe.ts; the suite puts them in the host's environment). Two models started with Start Worker land on
// the two GPUs without a question about devices, and the Remote Nodes tree shows each GPU with a
// usage bar and its worker under it. A screenshot of the tree goes to the harness's output folder.
import assert from "node:assert/strict";
import path from "node:path";
import * as vscode from "vscode";
import { workbench } from "../bridge-client";
import { runCases, waitUntil } from "../host-runner";
import { openSuiteHome } from "./suite-home";
import type { RbeeApi } from "../../../extension/src/extension";
import { ensureModel } from "../../fixtures/models";
import { softwareGpus } from "../../helpers/lavapipe";
import { modelShortName } from "../../../extension/src/ui-core/nodes/node-format";

export async function run(): Promise<void> {
  const suite = await openSuiteHome("rbee-vscode-gpu-home-");
  const { extension } = suite;
  Object.assign(process.env, softwareGpus(2).visible);
  const cache = path.join(extension.extensionPath, ".cache", "models");
  const models = [42, 43].map((seed) => `file:${ensureModel("tiny", seed, cache)}`);
  let api: RbeeApi | undefined;

  try {
    await runCases("gpu", [
      {
        name: "Start Worker places two models on the two GPUs, and the tree shows each GPU with its worker",
        fn: async () => {
          api = await extension.activate();
          const ids: string[] = [];
          for (const model of models) {
            // Options given: the picker's questions are skipped; "auto" is what the picker offers first.
            const id = await vscode.commands.executeCommand<string | undefined>("rbee.startWorker", undefined, model, {
              contextSize: 512,
              slots: 1,
            });
            assert.ok(id, `Start Worker for ${model} failed (see the rbee log)`);
            ids.push(id);
          }
          await vscode.commands.executeCommand("rbee.nodes.focus");
          await api.nodes.refresh({ all: true });
          const s = api.nodes.snapshot("localhost");
          assert.equal(s?.status, "running", s?.reason);
          assert.deepEqual(
            s.devices.map((d) => `${d.backend}:${d.index}`),
            ["vulkan:0", "vulkan:1"],
          );
          assert.deepEqual(
            s.devices.map((d) => d.workers?.length),
            [1, 1],
            JSON.stringify(s.devices),
          );
          assert.deepEqual(new Set(s.workers.map((w) => w.device)), new Set([0, 1]));

          for (const i of [0, 1]) await workbench.waitFor(`.monaco-list-row:has-text("VULKAN ${i}: llvmpipe")`);
          const rows = await workbench.text(".monaco-list-row", {});
          const gpuRows = rows.filter((r) => /VULKAN [01]: llvmpipe/.test(r));
          assert.equal(gpuRows.length, 2, JSON.stringify(rows));
          for (const r of gpuRows) assert.match(r, /[▰▱]{10} .* free of .* · 1 worker/);
          // Each worker's row follows its GPU's row (it is that GPU's child in the tree).
          for (const w of s.workers) {
            const gpuAt = rows.findIndex((r) => r.includes(`VULKAN ${w.device}: llvmpipe`));
            assert.ok(
              rows[gpuAt + 1]?.includes(modelShortName(w.model_ref)),
              `worker ${w.id} is not under GPU ${w.device}: ${JSON.stringify(rows)}`,
            );
          }
          await workbench.screenshot("rbee-nodes-gpus");
          for (const id of ids)
            await (await api.services.controller("localhost")).hive(false).then((h) => h.shutdown(id));
          await api.nodes.refresh({ all: true });
          await waitUntil(
            () => (api!.nodes.snapshot("localhost")?.workers.length ?? -1) === 0,
            () => "the workers to stop",
            30_000,
          );
        },
      },
    ]);
  } finally {
    await suite.close(api);
  }
}
