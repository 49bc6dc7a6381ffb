// Finding 7 (docs/security.md): a workspace's settings must not choose where code or credentials
// go. VS Code enforces "scope": "machine" (workspace values are ignored) and the untrusted-workspace
// declaration; this checks the manifest declares both for every such setting settings.ts reads.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { MACHINE_SETTINGS } from "../../extension/src/ui-core/machine-settings";

const manifest = JSON.parse(readFileSync(path.join(__dirname, "..", "..", "package.json"), "utf8"));

test("settings-machine-scope: every setting that picks a node, a model or the SSH config is machine-scoped and restricted in untrusted workspaces", () => {
  const props = manifest.contributes.configuration.properties;
  const restricted: string[] = manifest.capabilities?.untrustedWorkspaces?.restrictedConfigurations ?? [];
  assert.ok(
    ["limited", false].includes(manifest.capabilities?.untrustedWorkspaces?.supported),
    "no untrusted-workspace declaration",
  );
  assert.ok(manifest.capabilities.untrustedWorkspaces.description.length > 20);
  for (const key of MACHINE_SETTINGS) {
    assert.ok(props[`rbee.${key}`], `rbee.${key} is not a contributed setting`);
    assert.ok(["machine", "application"].includes(props[`rbee.${key}`].scope), `rbee.${key} can be set by a workspace`);
    assert.ok(restricted.includes(`rbee.${key}`), `rbee.${key} is not restricted in untrusted workspaces`);
  }
  // Anything else named *.node, *.model or *Path must be in the list too.
  for (const key of Object.keys(props).filter((k) => /\.(node|model)$|Path$/.test(k)))
    assert.ok(
      (MACHINE_SETTINGS as readonly string[]).includes(key.slice("rbee.".length)),
      `${key} is missing from MACHINE_SETTINGS`,
    );
  // settings.ts reads them with getUser (user settings only), never get.
  const settingsSource = readFileSync(
    path.join(__dirname, "..", "..", "extension", "src", "ui", "settings.ts"),
    "utf8",
  );
  for (const key of MACHINE_SETTINGS)
    assert.match(
      settingsSource,
      new RegExp(`getUser\\("${key.replace(".", "\\.")}"`),
      `settings.ts reads ${key} from workspace settings`,
    );
});
