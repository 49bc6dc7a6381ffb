// What every rbee suite does around its cases inside the extension host: find the extension, give rbee a
// temporary RBEE_HOME (set before any rbee command runs) and an ssh config that does not exist, and
// afterwards stop the local hive it started (detached by design, it would outlive the window), undo the
// setting and remove the folder.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import * as vscode from "vscode";
import type { RbeeApi } from "../../../extension/src/extension";

export const EXTENSION_ID = "rbee.rbee";

export interface SuiteHome {
  extension: vscode.Extension<RbeeApi>;
  home: string;
  config(): vscode.WorkspaceConfiguration;
  close(api: RbeeApi | undefined): Promise<void>;
}

export async function openSuiteHome(prefix: string): Promise<SuiteHome> {
  const extension = vscode.extensions.getExtension<RbeeApi>(EXTENSION_ID);
  assert.ok(extension, `${EXTENSION_ID} is not loaded`);
  const home = mkdtempSync(path.join(os.tmpdir(), prefix));
  process.env.RBEE_HOME = home;
  const config = () => vscode.workspace.getConfiguration("rbee");
  await config().update("nodes.sshConfigPath", path.join(home, "no-ssh-config"), vscode.ConfigurationTarget.Global);
  return {
    extension,
    home,
    config,
    async close(api) {
      if (api?.services.loaded) {
        const stack = await api.services.get().catch(() => undefined);
        await stack?.local.stop().catch(() => undefined);
      }
      await config().update("nodes.sshConfigPath", undefined, vscode.ConfigurationTarget.Global);
      rmSync(home, { recursive: true, force: true });
    },
  };
}
