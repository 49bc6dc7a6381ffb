// The worker's hand-built token frame must be byte for byte what writeSse writes for the same event:
// clients (and the keeper's validation) parse it as any other stream event.
import { test } from "node:test";
import assert from "node:assert/strict";
import { tokenFrame } from "../../hive-agent/src/worker/token-frames";
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
