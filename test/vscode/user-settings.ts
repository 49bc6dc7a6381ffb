// The user settings every test window starts with, for both runners (code-server and Electron).
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";

/** Keep the workbench quiet and offline: no welcome page, tips, updates, telemetry or git scans. */
export const QUIET_SETTINGS: Readonly<Record<string, unknown>> = {
  "workbench.startupEditor": "none",
  "workbench.tips.enabled": false,
  "workbench.enableExperiments": false,
  "workbench.welcomePage.walkthroughs.openOnInstall": false,
  "workbench.settings.enableNaturalLanguageSearch": false,
  "telemetry.telemetryLevel": "off",
  "update.mode": "none",
  "extensions.autoUpdate": false,
  "extensions.autoCheckUpdates": false,
  "extensions.ignoreRecommendations": true,
  "security.workspace.trust.enabled": false,
  "git.enabled": false,
  "npm.fetchOnlinePackageInfo": false,
  "typescript.disableAutomaticTypeAcquisition": true,
  "chat.commandCenter.enabled": false,
  // Deterministic keys: Tab inserts one tab character, whatever the file's detected indentation.
  "editor.insertSpaces": false,
  "editor.detectIndentation": false,
};

/** Writes <userDataDir>/User/settings.json: QUIET_SETTINGS with `extra` on top. */
export function writeUserSettings(userDataDir: string, extra: Record<string, unknown> = {}): void {
  const dir = path.join(userDataDir, "User");
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, "settings.json"), JSON.stringify({ ...QUIET_SETTINGS, ...extra }, null, 2));
}
