// How many CPU cores this node's workers may really use: the CPU affinity (what os.availableParallelism
// reports) capped by the cgroup's CPU quota. A container started with `--cpus 4` on a 64-core host
// sees 64 CPUs but gets 4 cores' worth of time; 63 compute threads there would spend most of it
// waiting in spinning barriers. Node 20's libuv (1.46) does not read the quota itself.

import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import path from "node:path";

/** Reads a file, or undefined when it is not there (not Linux, no cgroup file). */
type ReadFile = (file: string) => string | undefined;

const readIfPresent: ReadFile = (file) => {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
};

/**
 * The CPU quota of this process's cgroup in cores (e.g. 2.5), or undefined when there is none.
 * cgroup v2: `cpu.max` ("max 100000" or "250000 100000"); v1: cpu.cfs_quota_us / cpu.cfs_period_us.
 * `root` and `read` are for tests.
 */
export function cgroupCpuQuota(read: ReadFile = readIfPresent, root = "/sys/fs/cgroup"): number | undefined {
  const membership = read("/proc/self/cgroup");
  if (membership === undefined) return undefined;
  for (const line of membership.split("\n")) {
    const [id, controllers, cgroupPath] = line.split(":");
    if (cgroupPath === undefined) continue;
    if (id === "0" && controllers === "") {
      // v2: the quota may sit on this cgroup or any parent; the tightest one counts.
      let tightest: number | undefined;
      for (let dir = cgroupPath; ; dir = path.posix.dirname(dir)) {
        const max = read(path.posix.join(root, dir, "cpu.max"))
          ?.trim()
          .split(/\s+/);
        if (max && max[0] !== "max" && Number(max[1]) > 0) {
          const cores = Number(max[0]) / Number(max[1]);
          if (cores > 0 && (tightest === undefined || cores < tightest)) tightest = cores;
        }
        if (dir === "/" || dir === ".") break;
      }
      if (tightest !== undefined) return tightest;
    } else if (controllers.split(",").includes("cpu")) {
      // v1: the hierarchy is mounted as cpu,cpuacct (or cpu); inside a container its path is "/".
      for (const mount of ["cpu,cpuacct", "cpu"]) {
        for (const dir of [cgroupPath, "/"]) {
          const quota = Number(read(path.posix.join(root, mount, dir, "cpu.cfs_quota_us"))?.trim());
          const period = Number(read(path.posix.join(root, mount, dir, "cpu.cfs_period_us"))?.trim());
          if (quota > 0 && period > 0) return quota / period;
        }
      }
    }
  }
  return undefined;
}

/** Cores the node's workers may use: the affinity's CPUs, capped by the cgroup quota (at least 1). */
export function usableCores(cpus = availableParallelism(), quota = cgroupCpuQuota()): number {
  if (quota === undefined) return cpus;
  return Math.max(1, Math.min(cpus, Math.floor(quota)));
}
