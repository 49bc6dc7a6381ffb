// The step gate that lines up concurrent generations (hive-agent/src/worker/step-gate.ts): nobody
// goes on until every member has arrived, members go on in sequence-id order, a lone member never
// waits, and leaving lets the others go.
import { test } from "node:test";
import assert from "node:assert/strict";
import { StepGate } from "../../hive-agent/src/worker/step-gate";

const settled = () => new Promise((r) => setImmediate(r));

test("a lone member never waits", () => {
  const gate = new StepGate();
  const m = gate.join(0);
  assert.equal(m.arrive(), undefined);
  assert.equal(m.arrive(), undefined);
  m.leave();
  assert.equal(gate.size, 0);
});

test("members wait for the last one, then go on in sequence-id order, whoever arrived last", async () => {
  const gate = new StepGate();
  const members = [3, 0, 2, 1].map((id) => ({ id, m: gate.join(id) }));
  const order: number[] = [];
  const waits: Promise<void>[] = [];
  // Arrive in the order 3, 0, 2 — and 1 last, as the one whose sampling finished last would.
  for (const { id, m } of members) {
    const w = m.arrive();
    assert.ok(w, `member ${id} waits`);
    waits.push(w.then(() => void order.push(id)));
    if (id !== 1) {
      await settled();
      assert.deepEqual(order, [], "nobody goes on before everyone has arrived");
    }
  }
  await Promise.all(waits);
  assert.deepEqual(order, [0, 1, 2, 3]);
});

test("a member that leaves releases the others waiting only for it; leave is idempotent", async () => {
  const gate = new StepGate();
  const a = gate.join(0);
  const b = gate.join(1);
  const c = gate.join(2);
  let released = 0;
  const wa = a.arrive()!.then(() => released++);
  const wb = b.arrive()!.then(() => released++);
  await settled();
  assert.equal(released, 0);
  c.leave();
  c.leave();
  await Promise.all([wa, wb]);
  assert.equal(released, 2);
  assert.equal(gate.size, 2);
  assert.equal(c.arrive(), undefined, "a member that left never waits");
  // Two members left: the next round needs both again.
  let next = 0;
  const na = a.arrive()!.then(() => next++);
  await settled();
  assert.equal(next, 0);
  b.leave();
  await na;
  assert.equal(next, 1);
});

test("holding: true while a member waits for the others, false once they all go on", async () => {
  const gate = new StepGate();
  const [a, b] = [gate.join(0), gate.join(1)];
  assert.equal(gate.holding, false);
  const wa = a.arrive();
  assert.equal(gate.holding, true, "member 0 is held for member 1");
  const wb = b.arrive();
  assert.equal(gate.holding, false, "the last arrival lets everyone go");
  await Promise.all([wa, wb]);
  a.leave();
  b.leave();
});
