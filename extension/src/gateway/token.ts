// The gateway's bearer token: 32 random bytes in a 0600 file under ~/.rbee, made on first use.
// Every tool that talks to the gateway presents it; `rbee serve --show-token` prints it.

import { randomBytes } from "node:crypto";
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { rbeeHome } from "../keeper/registry";

export function gatewayTokenPath(home = rbeeHome()): string {
  return path.join(home, "gateway", "token");
}

/** Reads the token, creating it (and its folder, 0700) when missing; a file others can read is tightened. */
export function loadGatewayToken(file = gatewayTokenPath()): string {
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  try {
    const token = readFileSync(file, "utf8").trim();
    if (token) {
      if ((statSync(file).mode & 0o077) !== 0) chmodSync(file, 0o600);
      return token;
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
  const token = `rbee-${randomBytes(32).toString("base64url")}`;
  try {
    // "wx": when two processes start at once, one writes and the other reads what it wrote.
    writeFileSync(file, token + "\n", { mode: 0o600, flag: "wx" });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    const theirs = readFileSync(file, "utf8").trim();
    if (theirs) return theirs;
    // An empty file (cut short, or emptied by hand): replace it.
    writeFileSync(file, token + "\n", { mode: 0o600 });
    chmodSync(file, 0o600);
  }
  return token;
}
