// Watches what an engine hands to llama.cpp: each decode's queued items (sequence id, tokens) and each
// sampling. It wraps node-llama-cpp's internal addon context (`context._ctx`: initBatch, addToBatch,
// decodeBatch, sampleToken) — instrumentation only, nothing is faked; a node-llama-cpp upgrade that
// changes those internals makes the tests that use it fail, and what they check must be looked at again.
import type { Engine } from "../../hive-agent/src/worker/engine";

/** One queued item of a decode: its sequence id and how many tokens it evaluates. */
export interface DecodeItem {
  seq: number;
  n: number;
}

export function spyOnDecodes(engine: Engine, on: { decode?: (items: DecodeItem[]) => void; sample?: () => void }) {
  const context = engine.context as unknown as { _ctx: Record<string, unknown> };
  const addon = context._ctx;
  let batch: DecodeItem[] = [];
  context._ctx = new Proxy(addon, {
    get(target, key) {
      const value = target[key as string];
      if (typeof value !== "function") return value;
      if (key === "initBatch") return (...args: unknown[]) => ((batch = []), value.apply(target, args));
      if (key === "addToBatch")
        return (sequenceId: number, firstIndex: number, tokens: Uint32Array, ...rest: unknown[]) => (
          batch.push({ seq: sequenceId, n: tokens.length }),
          value.call(target, sequenceId, firstIndex, tokens, ...rest)
        );
      if (key === "decodeBatch") return (...args: unknown[]) => (on.decode?.(batch), value.apply(target, args));
      if (key === "sampleToken")
        return (...args: unknown[]) => (value.apply(target, args) as Promise<unknown>).then((r) => (on.sample?.(), r));
      return value.bind(target);
    },
  });
}
