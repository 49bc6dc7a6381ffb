// Side-by-side runs: every contender does the same request, in rotating order, round after round,
// so load from other processes on the shared cores falls on all of them alike. Each run also records
// how much CPU the rest of the machine used meanwhile ("foreign" load, in cores), so a table can
// show the figure from quiet runs next to the figure from all runs.

import { readFileSync } from "node:fs";
import { startChildEngine, type ChildEngineOptions, type GenerateRequest } from "./inprocess";
import { startLlamaServer, streamCompletion, type LlamaServerOptions } from "./llama-server";
import { median, type StreamTiming } from "./measure";

export interface Contender {
  name: string;
  /** Processes whose CPU time is the contender's own (not foreign load). */
  pids: number[];
  generate(req: GenerateRequest): Promise<StreamTiming>;
  stop(): Promise<void>;
}

export async function serverContender(name: string, opts: LlamaServerOptions): Promise<Contender> {
  const server = await startLlamaServer(opts);
  return {
    name,
    pids: [server.pid],
    generate: (req) =>
      streamCompletion(server.url, {
        prompt: req.prompt,
        nPredict: req.maxTokens,
        seed: req.seed,
        temperature: req.temperature,
        topK: req.topK,
        topP: req.topP,
      }),
    stop: () => server.stop(),
  };
}

export async function engineContender(name: string, opts: ChildEngineOptions): Promise<Contender> {
  const engine = await startChildEngine(opts);
  return { name, pids: [engine.pid], generate: (req) => engine.generate(req), stop: () => engine.stop() };
}

export interface Row {
  name: string;
  tokPerS: number[];
  firstTokenMs: number[];
  /** Cores used by other processes during each run. */
  foreign: number[];
}

/** A run is "quiet" when the rest of the machine used less than this many cores meanwhile. */
export const QUIET_FOREIGN_CORES = 0.25;

function busyJiffies(): number {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = f;
  return user + nice + system + irq + softirq + (steal ?? 0);
}

function totalJiffies(): number {
  return readFileSync("/proc/stat", "utf8")
    .split("\n")[0]
    .trim()
    .split(/\s+/)
    .slice(1)
    .reduce((a, b) => a + Number(b), 0);
}

function processJiffies(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return Number(f[11]) + Number(f[12]); // utime + stime, all threads
  } catch {
    return 0;
  }
}

/** Measures what other processes use while `fn` runs, in cores. */
async function withForeignLoad<T>(ours: number[], fn: () => Promise<T>): Promise<{ value: T; foreign: number }> {
  const pids = [process.pid, ...ours];
  const own0 = pids.reduce((s, p) => s + processJiffies(p), 0);
  const busy0 = busyJiffies();
  const total0 = totalJiffies();
  const value = await fn();
  const own = pids.reduce((s, p) => s + processJiffies(p), 0) - own0;
  const busy = busyJiffies() - busy0;
  const total = totalJiffies() - total0;
  const cores = readFileSync("/proc/stat", "utf8")
    .split("\n")
    .filter((l) => /^cpu\d/.test(l)).length;
  return { value, foreign: total > 0 ? Math.max(0, ((busy - own) / total) * cores) : 0 };
}

/** One stream at a time; `rounds` measured rounds after one warm-up round. */
export async function compareSingle(contenders: Contender[], req: GenerateRequest, rounds: number): Promise<Row[]> {
  const rows = contenders.map((c): Row => ({ name: c.name, tokPerS: [], firstTokenMs: [], foreign: [] }));
  for (const c of contenders) await c.generate({ ...req, maxTokens: 8 });
  for (let r = 0; r < rounds; r++) {
    for (let k = 0; k < contenders.length; k++) {
      const i = (k + r) % contenders.length;
      const { value: t, foreign } = await withForeignLoad(contenders[i].pids, () => contenders[i].generate(req));
      if (t.tokens !== req.maxTokens)
        throw new Error(`${contenders[i].name} produced ${t.tokens} tokens, not ${req.maxTokens}`);
      rows[i].tokPerS.push(t.decodeTokPerS);
      rows[i].firstTokenMs.push(t.firstTokenMs);
      rows[i].foreign.push(foreign);
    }
  }
  return rows;
}

/** `streams` requests at once; the figure is the sum of the streams' decode rates. */
export async function compareConcurrent(
  contenders: Contender[],
  req: GenerateRequest,
  streams: number,
  rounds: number,
): Promise<Row[]> {
  const rows = contenders.map((c): Row => ({ name: c.name, tokPerS: [], firstTokenMs: [], foreign: [] }));
  for (const c of contenders)
    await Promise.all(Array.from({ length: streams }, (_, s) => c.generate({ ...req, seed: s + 1, maxTokens: 8 })));
  for (let r = 0; r < rounds; r++) {
    for (let k = 0; k < contenders.length; k++) {
      const i = (k + r) % contenders.length;
      const run = () =>
        Promise.all(Array.from({ length: streams }, (_, s) => contenders[i].generate({ ...req, seed: s + 1 })));
      const { value: all, foreign } = await withForeignLoad(contenders[i].pids, run);
      rows[i].tokPerS.push(all.reduce((sum, t) => sum + t.decodeTokPerS, 0));
      rows[i].firstTokenMs.push(Math.max(...all.map((t) => t.firstTokenMs)));
      rows[i].foreign.push(foreign);
    }
  }
  return rows;
}

/** The runs of a row that were quiet (little foreign load). */
function quiet(row: Row, values: number[]): number[] {
  return values.filter((_, i) => row.foreign[i] < QUIET_FOREIGN_CORES);
}

/**
 * A table: per contender the median (min-max) of all runs, the median of the quiet runs (with how
 * many there were) and the ratios to the first row (the reference), all runs and quiet runs.
 */
export function formatRows(title: string, rows: Row[]): string {
  const ref = median(rows[0].tokPerS);
  const refQuiet = median(quiet(rows[0], rows[0].tokPerS));
  const refFirst = median(rows[0].firstTokenMs);
  const lines = [
    title,
    `  ${"contender".padEnd(40)} ${"tok/s all runs".padEnd(20)} ${"quiet runs".padEnd(12)} ${"÷ref".padEnd(5)} ${"÷ref q".padEnd(7)} first-token ms (Δ ref)  foreign cores`,
  ];
  for (const row of rows) {
    const m = median(row.tokPerS);
    const q = quiet(row, row.tokPerS);
    const mq = median(q);
    const f = median(row.firstTokenMs);
    const all = `${m.toFixed(0)} (${Math.min(...row.tokPerS).toFixed(0)}-${Math.max(...row.tokPerS).toFixed(0)})`;
    const quietCell = q.length ? `${mq.toFixed(0)} (${q.length}/${row.tokPerS.length})` : `- (0/${row.tokPerS.length})`;
    const dq = q.length && !Number.isNaN(refQuiet) ? (mq / refQuiet).toFixed(2) : "-";
    const df = `${f.toFixed(1)} (${f - refFirst >= 0 ? "+" : ""}${(f - refFirst).toFixed(1)})`;
    lines.push(
      `  ${row.name.padEnd(40)} ${all.padEnd(20)} ${quietCell.padEnd(12)} ${(m / ref).toFixed(2).padEnd(5)} ${dq.padEnd(7)} ${df.padEnd(23)} ${median(row.foreign).toFixed(2)}`,
    );
  }
  return lines.join("\n");
}
