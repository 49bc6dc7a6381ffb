// The worker's hand-built token frame must be byte for byte what writeSse writes for the same event:
// clients (and the keeper's validation) parse it as any other stream event.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { ServerResponse } from "node:http";
import { TokenFrames, tokenFrame } from "../../hive-agent/src/worker/token-frames";
import type { StreamEvent } from "../../hive-agent/src/protocol";

test("a token frame equals the SSE frame of the token event object", () => {
  const texts = [
    "",
    " fib",
    'say "hi"\n',
    "tab\there \\ back",
    "ünïcödé 漢字 🐝",
    "\u0000\u001f\u2028\u2029",
    "\ud800 lone surrogate",
    "</script>",
  ];
  for (const [i, t] of texts.entries()) {
    const event: StreamEvent = { type: "token", t, i: i * 1000 };
    assert.equal(tokenFrame(t, i * 1000), `data: ${JSON.stringify(event)}\n\n`);
  }
});

/** Stands in for a client's ServerResponse (only what TokenFrames uses): records each write. */
function recordingResponse() {
  const writes: string[] = [];
  const res = { writableEnded: false, destroyed: false, write: (d: string) => writes.push(d) };
  return { res: res as unknown as ServerResponse, writes };
}

test("frames of one stream: the first written at once, later ones coalesced within the window, the rest on take()", async () => {
  const frames = new TokenFrames(() => false, 30);
  const { res, writes } = recordingResponse();
  frames.queue(res, "a");
  frames.flush();
  assert.deepEqual(writes, ["a"]);
  frames.queue(res, "b");
  frames.flush(); // within 30 ms of "a": held
  frames.queue(res, "c");
  frames.flush();
  assert.deepEqual(writes, ["a"]);
  // No decode comes: the timer writes both once the window is over, in one write.
  await new Promise((r) => setTimeout(r, 60));
  assert.deepEqual(writes, ["a", "bc"]);
  frames.queue(res, "d");
  frames.take(res); // the stream ends: its frames go out now, whatever the window
  assert.deepEqual(writes, ["a", "bc", "d"]);
});

test("a held frame waits for the decode's flush when one is on its way, and streams keep their own windows", async () => {
  let decodeComing = true;
  const frames = new TokenFrames(() => decodeComing, 20);
  const one = recordingResponse();
  const two = recordingResponse();
  frames.queue(one.res, "1a");
  frames.flush();
  frames.queue(one.res, "1b");
  frames.queue(two.res, "2a");
  frames.flush(); // stream two was never written to: at once; stream one is inside its window
  assert.deepEqual(one.writes, ["1a"]);
  assert.deepEqual(two.writes, ["2a"]);
  await new Promise((r) => setTimeout(r, 40));
  assert.deepEqual(one.writes, ["1a"], "the timer leaves it to the decode on its way");
  decodeComing = false;
  frames.flush(); // that decode's flush
  assert.deepEqual(one.writes, ["1a", "1b"]);
});
