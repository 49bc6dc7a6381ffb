// The extension's keeper stack (RbeeServices over openKeeperStack, the factory the CLI uses too) under plain Node, as the UI-core tests and the inline
// benches build it: its own RBEE_HOME and global storage in a temporary folder, no ssh config. close()
// stops the local hive it started (detached by design), restores RBEE_HOME and removes the folder.

import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { RbeeServices, type Logger } from "../../extension/src/ui-core/services";
import { REPO_ROOT } from "./hive";

export const QUIET: Logger = { trace() {}, info() {}, warn() {}, error() {} };

export interface TestServices {
  services: RbeeServices;
  home: string;
  close(): Promise<void>;
}

export function openTestServices(prefix: string, log: Logger = QUIET): TestServices {
  const home = mkdtempSync(path.join(os.tmpdir(), prefix));
  const previous = process.env.RBEE_HOME;
  process.env.RBEE_HOME = home; // the local hive, its token and models live here, not in ~/.rbee
  const services = new RbeeServices({
    storageDir: path.join(home, "storage"),
    bundleDir: path.join(REPO_ROOT, "dist"),
    extensionDir: REPO_ROOT,
    log,
    ssh: { configPath: () => path.join(home, "no-ssh-config") },
  });
  return {
    services,
    home,
    async close() {
      const stack = await services.get().catch(() => undefined);
      await stack?.local.stop();
      await services.dispose();
      if (previous === undefined) delete process.env.RBEE_HOME;
      else process.env.RBEE_HOME = previous;
      rmSync(home, { recursive: true, force: true });
    },
  };
}
