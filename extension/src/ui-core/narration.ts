// The keeper's narration for the UI: one line of text per event (for the "rbee" log) and, for the
// progress notification, a message plus how far along the work is.

import type { KeeperEvent } from "../keeper/keeper";

const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;

/** The line written to the "rbee" log for an event; undefined for events too chatty to log. */
export function eventLogLine(e: KeeperEvent): string | undefined {
  switch (e.kind) {
    case "phase":
      return `[${e.phase}] ${e.message}`;
    case "download": {
      const d = e.event;
      if (d.stage === "downloading") return undefined; // many per second; the notification shows them
      if (d.stage === "retrying")
        return `[model] download attempt ${d.attempt}/${d.max_attempts} failed (${d.message}); retrying in ${(d.delay_ms / 1000).toFixed(1)} s`;
      if (d.stage === "verifying") return "[model] verifying the checksum";
      if (d.stage === "complete") return `[model] downloaded to ${d.local_path} (${mib(d.size_bytes)})`;
      return `[model] download failed: ${d.message} [${d.code}]`;
    }
    case "loading":
      return undefined;
    case "retry":
      return `[stream] ${e.reason}: retry ${e.attempt}/${e.of} in ${(e.delayMs / 1000).toFixed(0)} s`;
  }
}

/**
 * A line for the progress notification. Percentages go in the text: VS Code's progress bar only
 * moves forward, and a cold start has several steps that each run from 0 to 100%.
 */
export interface ProgressStep {
  message: string;
}

/** What the progress notification says for an event; undefined to leave it as it is. */
export function progressStep(e: KeeperEvent): ProgressStep | undefined {
  switch (e.kind) {
    case "phase":
      return e.status === "started" ? { message: e.message } : undefined;
    case "download": {
      const d = e.event;
      if (d.stage === "downloading")
        return {
          message:
            `downloading${d.bytes_total ? ` ${Math.floor((d.bytes_downloaded / d.bytes_total) * 100)}%:` : ""} ` +
            `${mib(d.bytes_downloaded)}${d.bytes_total ? ` of ${mib(d.bytes_total)}` : ""} at ${mib(d.speed_bps)}/s`,
        };
      if (d.stage === "verifying") return { message: "verifying the download" };
      if (d.stage === "retrying")
        return { message: `download attempt ${d.attempt}/${d.max_attempts} failed (${d.message}); retrying` };
      return undefined;
    }
    case "loading":
      return { message: `loading the model ${Math.round(e.progress * 100)}%` };
    case "retry":
      return { message: `${e.reason}: retrying in ${(e.delayMs / 1000).toFixed(0)} s` };
  }
}

/** Replaces secrets that might appear in a message (bearer tokens, api_key fields) before it is logged. */
export function redactSecrets(text: string): string {
  return text
    .replace(/(Bearer\s+)[A-Za-z0-9._~+/=-]+/gi, "$1[redacted]")
    .replace(/("?(?:api_key|token|passphrase|password)"?\s*[:=]\s*"?)[^"\s,}]+/gi, "$1[redacted]");
}
