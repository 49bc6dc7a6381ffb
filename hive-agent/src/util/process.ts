// Process helpers shared by the hive-agent and the keeper.

/** Whether a process with this pid exists (signal 0 checks without sending anything). */
export function isPidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM"; // exists, owned by another user
  }
}
