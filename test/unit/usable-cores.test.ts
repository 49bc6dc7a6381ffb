// The cores a node's workers may use: CPU affinity capped by the cgroup CPU quota (containers started
// with --cpus), read from cgroup v2 and v1 files (a fake file system here; the real one on Linux).
import { test } from "node:test";
import assert from "node:assert/strict";
import { availableParallelism } from "node:os";
import { cgroupCpuQuota, usableCores } from "../../hive-agent/src/hive/usable-cores";

const fs = (files: Record<string, string>) => (file: string) => files[file];

test("cgroup v2: the tightest cpu.max on the way up, 'max' meaning none", () => {
  const self = "0::/system.slice/docker-abc.scope\n";
  assert.equal(
    cgroupCpuQuota(
      fs({ "/proc/self/cgroup": self, "/sys/fs/cgroup/system.slice/docker-abc.scope/cpu.max": "250000 100000\n" }),
    ),
    2.5,
  );
  assert.equal(
    cgroupCpuQuota(
      fs({
        "/proc/self/cgroup": self,
        "/sys/fs/cgroup/system.slice/docker-abc.scope/cpu.max": "max 100000\n",
        "/sys/fs/cgroup/system.slice/cpu.max": "400000 100000",
      }),
    ),
    4,
  );
  // Inside a container the cgroup is "/" and cpu.max sits at the root of the mount.
  assert.equal(cgroupCpuQuota(fs({ "/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/cpu.max": "150000 100000" })), 1.5);
  assert.equal(
    cgroupCpuQuota(fs({ "/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/cpu.max": "max 100000" })),
    undefined,
  );
});

test("cgroup v1: cfs quota over period, -1 meaning none; no cgroup file at all (not Linux) means none", () => {
  const self = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n";
  assert.equal(
    cgroupCpuQuota(
      fs({
        "/proc/self/cgroup": self,
        "/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "300000\n",
        "/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
      }),
    ),
    3,
  );
  // Inside the container the hierarchy's root is its own cgroup.
  assert.equal(
    cgroupCpuQuota(
      fs({
        "/proc/self/cgroup": self,
        "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "200000",
        "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000",
      }),
    ),
    2,
  );
  assert.equal(
    cgroupCpuQuota(
      fs({
        "/proc/self/cgroup": self,
        "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1",
        "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000",
      }),
    ),
    undefined,
  );
  assert.equal(cgroupCpuQuota(fs({})), undefined);
});

test("usable cores: affinity capped by the whole cores of the quota, never below one", () => {
  assert.equal(usableCores(64, 4), 4);
  assert.equal(usableCores(64, 2.5), 2);
  assert.equal(usableCores(64, 0.5), 1);
  assert.equal(usableCores(8, 16), 8);
  assert.equal(usableCores(8, undefined), 8);
  // This machine: whatever the quota, never more than the affinity allows.
  assert.ok(usableCores() >= 1 && usableCores() <= availableParallelism());
});
