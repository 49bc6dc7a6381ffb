// How a worker's concurrent streams share decodes (hive-agent/src/worker/decode-batching.ts): by
// default their next tokens go into one llama.cpp batch; "one-at-a-time" (what calibration picks on a
// CPU where batching loses) decodes one stream's token per batch, alternating, and both streams still
// get every token they asked for.
//
// The real engine on a generated model; each decode's items are watched through
// test/helpers/decode-spy.ts (instrumentation of node-llama-cpp's addon context, nothing faked).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Engine } from "../../hive-agent/src/worker/engine";
import type { DecodeBatching } from "../../hive-agent/src/protocol";
import { ensureModel } from "../fixtures/models";
import { spyOnDecodes, type DecodeItem } from "../helpers/decode-spy";

const MAX_TOKENS = 16;

/** Loads an engine with two slots and records the items of every decode it hands to llama.cpp. */
async function instrumentedEngine(decodeBatching: DecodeBatching | undefined) {
  const engine = await Engine.load({
    modelPath: ensureModel("tiny"),
    backend: "cpu",
    contextSize: 256,
    slots: 2,
    threads: 1,
    decodeBatching,
  });
  const decodes: DecodeItem[][] = [];
  spyOnDecodes(engine, { decode: (items) => decodes.push(items) });
  return { engine, decodes };
}

/** Two generations at once, each on its own slot; returns their token counts and stop reasons. */
async function twoStreams(engine: Engine) {
  const run = async (prompt: string) => {
    const prepared = engine.prepare({ kind: "text", prompt }, MAX_TOKENS);
    const slot = engine.acquireSlot(prepared.tokens);
    try {
      let tokens = 0;
      const r = await engine.generate(
        slot,
        prepared,
        { max_tokens: MAX_TOKENS, temperature: 0, seed: 1 },
        new AbortController().signal,
        () => tokens++,
      );
      return { tokens, tokensOut: r.tokensOut, stopReason: r.stopReason };
    } finally {
      engine.releaseSlot(slot);
    }
  };
  return Promise.all([run("def f0(x):"), run("class Point:")]);
}

/** The decodes of generated tokens only (one token per stream; prompt evaluations left out), as sequence ids. */
function decodeSteps(decodes: DecodeItem[][]): number[][] {
  return decodes.filter((items) => items.every((i) => i.n === 1)).map((items) => items.map((i) => i.seq));
}

test("one-at-a-time: each decode carries one stream's token, the streams alternate, and both get every token", async () => {
  const { engine, decodes } = await instrumentedEngine("one-at-a-time");
  try {
    assert.equal(engine.decodeBatching, "one-at-a-time");
    const results = await twoStreams(engine);
    for (const r of results) {
      assert.equal(r.tokensOut, MAX_TOKENS);
      assert.equal(r.tokens, MAX_TOKENS);
      assert.equal(r.stopReason, "max_tokens");
    }
    const steps = decodeSteps(decodes);
    assert.ok(steps.length >= 2 * (MAX_TOKENS - 1), `only ${steps.length} decode steps`);
    assert.deepEqual(
      steps.filter((seqs) => seqs.length !== 1),
      [],
      "a decode carried more than one stream's token",
    );
    // Both streams decode throughout, alternating: neither runs to its end before the other starts.
    const order = steps.map((seqs) => seqs[0]);
    const switches = order.filter((s, i) => i > 0 && s !== order[i - 1]).length;
    assert.ok(switches >= MAX_TOKENS, `the streams switched only ${switches} times: ${order.join("")}`);
  } finally {
    await engine.dispose();
  }
});

test("together (the default): the two streams' tokens share decodes", async () => {
  const { engine, decodes } = await instrumentedEngine(undefined);
  try {
    assert.equal(engine.decodeBatching, "together");
    const results = await twoStreams(engine);
    for (const r of results) assert.equal(r.tokensOut, MAX_TOKENS);
    const shared = decodeSteps(decodes).filter((seqs) => seqs.length === 2).length;
    // Each step of the two generations after their first token is one decode of both.
    assert.ok(shared >= MAX_TOKENS - 2, `only ${shared} decodes carried both streams`);
  } finally {
    await engine.dispose();
  }
});
