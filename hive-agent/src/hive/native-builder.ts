// The node's own CPU build of llama.cpp, made by the hive in the background once it is deployed,
// where it may pay off: CPU workers of 2+ threads ran 2–5× faster on it than on node-llama-cpp's
// prebuilt, which has no OpenMP (test/bench/FINDINGS.md), and on a CPU without AMX it was 1.5× faster
// at one thread too. Whether workers use it is for calibration to say (calibrator.ts measures it
// against the prebuilt's CPU variants as soon as it is ready); without calibration, workers of 2+
// threads use it. Workers started before it is ready, or after it failed, use the prebuilt; the
// build never blocks a spawn.
//
// It is skipped where it would not be used (a GPU node; workers of one thread with calibration off)
// or cannot be made (no cmake, C++ compiler or npm: node-llama-cpp would otherwise try to download
// cmake, and nodes need not reach the internet). `rbee nodes build-native` builds by hand.

import { accessSync, constants } from "node:fs";
import path from "node:path";
import type { NativeBuildStatus, NodeHardware } from "../protocol";
import { buildNativeLlama, checkNativeBuild } from "../worker/native-build";
import type { Logger } from "../util/log";

export type NativeBuildMode = "auto" | "off";
export const NATIVE_BUILD_MODES: readonly NativeBuildMode[] = ["auto", "off"];

/** Build tools found on the PATH (node-llama-cpp's build runs cmake-js through `npm run`). */
export interface Toolchain {
  cmake: boolean;
  cxx: boolean;
  npm: boolean;
}

export function findToolchain(pathVar = process.env.PATH ?? ""): Toolchain {
  const onPath = (name: string) =>
    pathVar.split(path.delimiter).some((dir) => {
      if (!dir) return false;
      try {
        accessSync(path.join(dir, name), constants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
  return { cmake: onPath("cmake"), cxx: ["c++", "g++", "clang++"].some(onPath), npm: onPath("npm") };
}

const BY_HAND = "rbee nodes build-native NODE (or rbee hive build-native on this machine)";

/**
 * Whether the hive should start a build now, and the status to report either way. `threads` is the
 * default a CPU worker gets on this node.
 */
export function planNativeBuild(input: {
  mode: NativeBuildMode;
  hardware: Pick<NodeHardware, "backends" | "cpu_cores">;
  threads: number;
  toolchain: Toolchain;
  existing: { ok: true } | { ok: false; reason: string };
  /** Whether calibration runs (it then decides whether workers use the build, at any thread count). */
  calibration?: boolean;
}): { build: boolean; status: NativeBuildStatus } {
  const skipped = (detail: string) => ({ build: false, status: { state: "skipped" as const, detail } });
  if (input.existing.ok) return { build: false, status: { state: "ready", detail: readyDetail(input.calibration) } };
  if (input.mode === "off") return skipped(`turned off (--native-build off); build it with ${BY_HAND}`);
  const gpus = input.hardware.backends.filter((b) => b !== "cpu");
  if (gpus.length)
    return skipped(
      `workers run on the GPU (${gpus.join(", ")}); for CPU workers of 2+ threads build it with ${BY_HAND}`,
    );
  if (input.threads < 2 && !input.calibration)
    return skipped(
      `${input.hardware.cpu_cores} CPU cores: workers default to 1 thread, and with calibration off they use node-llama-cpp's prebuilt there`,
    );
  const missing = [
    !input.toolchain.cmake && "cmake",
    !input.toolchain.cxx && "a C++ compiler",
    !input.toolchain.npm && "npm",
  ].filter((x): x is string => !!x);
  if (missing.length)
    return skipped(`no ${words(missing, "or")} on this node; install ${words(missing, "and")}, then run ${BY_HAND}`);
  const then = input.calibration ? "; calibration then measures it against the prebuilt" : "";
  return {
    build: true,
    status: {
      state: "building",
      detail: `building llama.cpp for this CPU in the background (minutes, lowest priority); workers use the prebuilt until it is ready${then}`,
    },
  };
}

function readyDetail(calibration: boolean | undefined): string {
  return calibration
    ? "this node's own build is ready; calibration decides whether CPU workers use it"
    : "CPU workers of 2+ threads use this node's own build";
}

/** "a", "a or b", "a, b or c". */
function words(items: string[], conjunction: string): string {
  return items.length < 2 ? items.join("") : `${items.slice(0, -1).join(", ")} ${conjunction} ${items.at(-1)}`;
}

export class NativeBuilder {
  private current: NativeBuildStatus = { state: "skipped", detail: "not checked yet" };
  private running?: Promise<void>;
  private decided = false;
  private readonly abort = new AbortController();

  constructor(
    private readonly dir: string,
    private readonly mode: NativeBuildMode,
    private readonly log: Logger,
    /** Whether calibration runs (see planNativeBuild). */
    private readonly calibration = false,
    /** Called once a build made here is ready (calibration measures it). */
    private readonly onReady: () => void = () => {},
  ) {}

  status(): NativeBuildStatus {
    // A build made by hand (rbee nodes build-native) while the hive runs counts at once.
    if (this.current.state !== "building" && this.current.state !== "ready" && checkNativeBuild(this.dir).ok) {
      this.current = { state: "ready", detail: readyDetail(this.calibration) };
      this.onReady();
    }
    return this.current;
  }

  /** Stops a build in progress (the hive is shutting down); the next hive starts it over. */
  async stop(): Promise<void> {
    this.abort.abort();
    await this.running;
  }

  /** Decides, and starts the build in the background when it pays off. Safe to call more than once. */
  start(hardware: NodeHardware, threads: number, toolchain = findToolchain()): void {
    if (this.decided) return;
    this.decided = true;
    const plan = planNativeBuild({
      mode: this.mode,
      hardware,
      threads,
      toolchain,
      existing: checkNativeBuild(this.dir),
      calibration: this.calibration,
    });
    this.current = plan.status;
    if (!plan.build) {
      if (plan.status.state === "skipped") this.log.info(`native build skipped: ${plan.status.detail}`);
      return;
    }
    this.log.info(`native build: starting in ${this.dir}`);
    this.running = buildNativeLlama({
      dir: this.dir,
      niceness: 19,
      signal: this.abort.signal,
      log: (line) => this.log.debug(line),
    }).then(
      (r) => {
        this.current = r.ok
          ? {
              state: "ready",
              detail: `built in ${Math.round(r.durationMs / 1000)} s; ${this.calibration ? "calibration measures it against the prebuilt now" : "CPU workers of 2+ threads started from now on use it"}`,
            }
          : { state: "failed", detail: `${r.error}; workers use node-llama-cpp's prebuilt. Retry with ${BY_HAND}` };
        if (this.abort.signal.aborted) return;
        if (r.ok) {
          this.log.info(`native build ready in ${Math.round(r.durationMs / 1000)} s`);
          this.onReady();
        } else this.log.warn(`native build failed: ${r.error}`);
      },
      (err) => {
        this.current = { state: "failed", detail: `${(err as Error).message}; workers use node-llama-cpp's prebuilt` };
        this.log.warn(`native build failed: ${(err as Error).message}`);
      },
    );
  }
}
