// The code-completion stops on generated lines: the indentation stop cuts before the first line
// indented less than asked; the time budget ends only at a line boundary.
import { test } from "node:test";
import assert from "node:assert/strict";
import { LineLimits } from "../../hive-agent/src/worker/line-limits";

test("n_indent: the first line stays whatever its indent; a later line indented less is cut where it begins", () => {
  const l = new LineLimits({ n_indent: 4 });
  assert.equal(l.push("x = 1"), -1);
  assert.equal(l.push("\n    y = 2\n  "), -1, "whitespace alone decides nothing yet");
  const piece = "}";
  assert.equal(l.push(piece), 0);
  const m = new LineLimits({ n_indent: 2 });
  assert.equal(m.push("a\n  b\nc"), 6);
  assert.equal(new LineLimits({}).push("a\nb"), -1, "no n_indent, no stop");
});

test("t_max_predict_ms: past the budget at a complete line; past twice the budget anywhere", () => {
  let now = 0;
  const l = new LineLimits({ t_max_predict_ms: 100 }, () => now);
  l.push("first line still going");
  now = 150;
  assert.equal(l.overBudget(0), false, "not in the middle of the first line");
  now = 201;
  assert.equal(l.overBudget(0), true, "but not beyond twice the budget");
  now = 150;
  l.push(" done\nsecond");
  assert.equal(l.overBudget(0), true);
  now = 50;
  assert.equal(l.overBudget(0), false);
  assert.equal(new LineLimits({}).overBudget(-1e9), false);
});
