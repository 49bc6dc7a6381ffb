// Renders the keeper's progress on stderr: a live progress bar for downloads and loading when
// stderr is a terminal, plain lines otherwise (logs, CI, pipes).

import type { KeeperEvent } from "../keeper/keeper";

const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;

export class Narrator {
  private barShown = false;
  private lastPlainPercent = -1;
  private lastLabel = "";

  constructor(
    private readonly out: NodeJS.WriteStream = process.stderr,
    private readonly quiet = false,
  ) {}

  private get tty() {
    return Boolean(this.out.isTTY);
  }

  line(text: string) {
    if (this.quiet) return;
    this.clearBar();
    this.out.write(`${text}\n`);
  }

  private clearBar() {
    if (this.barShown) {
      this.out.write("\r\x1b[2K");
      this.barShown = false;
    }
  }

  /** A progress bar on a terminal, a line per quarter otherwise (deploy uploads use it too). */
  progress(label: string, fraction: number, extra = "") {
    if (label !== this.lastLabel) this.lastPlainPercent = -1; // a new step starts its own count
    this.lastLabel = label;
    this.bar(label, fraction, extra);
  }

  private bar(label: string, fraction: number, extra = "") {
    if (this.quiet) return;
    const pct = Math.max(0, Math.min(100, Math.round(fraction * 100)));
    if (this.tty) {
      const width = 30;
      const filled = Math.round((pct / 100) * width);
      this.out.write(`\r\x1b[2K${label} [${"#".repeat(filled)}${"-".repeat(width - filled)}] ${pct}% ${extra}`);
      this.barShown = true;
    } else if (pct !== this.lastPlainPercent && (pct === 100 || pct - this.lastPlainPercent >= 25)) {
      this.lastPlainPercent = pct;
      this.out.write(`${label} ${pct}% ${extra}\n`);
    }
  }

  event(e: KeeperEvent) {
    switch (e.kind) {
      case "phase":
        if (e.status !== "done" || e.phase === "ready" || e.phase === "model") this.line(`[${e.phase}] ${e.message}`);
        this.lastPlainPercent = -1;
        return;
      case "download": {
        const d = e.event;
        if (d.stage === "downloading")
          this.bar(
            "downloading",
            d.bytes_total ? d.bytes_downloaded / d.bytes_total : 0,
            `${mib(d.bytes_downloaded)}${d.bytes_total ? ` / ${mib(d.bytes_total)}` : ""} at ${mib(d.speed_bps)}/s`,
          );
        else if (d.stage === "retrying")
          this.line(
            `[model] download attempt ${d.attempt}/${d.max_attempts} failed (${d.message}); retrying in ${(d.delay_ms / 1000).toFixed(1)} s`,
          );
        else if (d.stage === "verifying") this.line("[model] verifying checksum");
        return;
      }
      case "loading":
        this.bar("loading", e.progress);
        return;
      case "retry":
        this.line(`[stream] ${e.reason}: retry ${e.attempt}/${e.of} in ${(e.delayMs / 1000).toFixed(0)} s`);
        return;
    }
  }

  done() {
    this.clearBar();
  }
}
