// A separate process that writes the registry, for the multi-process tests.
// Run as `node --import tsx test/helpers/registry-child.ts <mode> <registry file> <prefix> [count]`.
//
//   loop     registers workers <prefix>-0, <prefix>-1, … forever, printing "committed <id>" after each
//            write has returned (so every printed id is on disk). The test kills it with SIGKILL.
//   register prints "ready" once the registry is open, waits for "go" on stdin (so all children start
//            writing at the same instant), registers <count> workers, prints "done <count>".
// Every child shares the node "shared", registered (idempotently) by each of them.

import { createInterface } from "node:readline";
import { Registry } from "../../extension/src/keeper/registry";

const [mode, file, prefix, countArg] = process.argv.slice(2);
const NODE = "shared";

function worker(id: string) {
  return {
    id,
    node: NODE,
    model_ref: "file:/models/tiny.gguf",
    url: "http://127.0.0.1:9",
    backend: "cpu" as const,
    device: 0,
    state: "idle" as const,
    slots_total: 1,
    api_key: `key-${id}`,
  };
}

async function main(): Promise<void> {
  const registry = await Registry.open(file, {
    logger: (level, message) => process.stderr.write(`${level}: ${message}\n`),
    lock: { timeoutMs: 60_000 },
  });
  await registry.upsertNode({ alias: NODE, host: "127.0.0.1", transport: "loopback" });

  if (mode === "loop") {
    for (let i = 0; ; i++) {
      const id = `${prefix}-${i}`;
      await registry.upsertWorker(worker(id));
      process.stdout.write(`committed ${id}\n`); // synchronous on a pipe (Linux): printed means sent
    }
  }

  if (mode === "register") {
    const count = Number(countArg);
    process.stdout.write("ready\n");
    const lines = createInterface({ input: process.stdin });
    for await (const line of lines) if (line.trim() === "go") break;
    lines.close();
    for (let i = 0; i < count; i++) await registry.upsertWorker(worker(`${prefix}-${i}`));
    registry.close();
    process.stdout.write(`done ${count}\n`);
    return;
  }

  throw new Error(`unknown mode "${mode}" (want loop or register)`);
}

main().catch((e) => {
  process.stderr.write(`registry-child failed: ${e?.code ?? ""} ${e?.stack ?? e}\n`);
  process.exit(1);
});
