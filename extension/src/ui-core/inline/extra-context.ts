// The ring buffer of other files' text sent with every completion (llama.vscode's "extra context"):
// chunks of files the user recently opened, edited, saved or copied from. Picks go to a queue first
// and enter the ring only when the engine flushes it on a pause in typing, followed by a warm-up
// request: the ring is the start of every prompt, so changing it on a keystroke would make the worker
// evaluate the whole prompt again. No `vscode` import.

export interface ExtraContextLimits {
  /** Chunks kept; 0 switches extra context off. */
  maxChunks: number;
  /** Lines per chunk. */
  chunkLines: number;
  /** Lines around a position a chunk may come from (edits and saves pick around the cursor). */
  scopeLines: number;
}

export const DEFAULT_EXTRA_CONTEXT: ExtraContextLimits = { maxChunks: 16, chunkLines: 64, scopeLines: 1024 };

export interface ExtraChunk {
  filename: string;
  text: string;
}

export class ExtraContext {
  private ring: ExtraChunk[] = [];
  private queue: ExtraChunk[] = [];
  /** Bumped whenever the ring changes, so the engine knows a warm-up is due. */
  version = 0;

  constructor(private readonly limits: () => ExtraContextLimits) {}

  /** The chunks to send, oldest first (the worker keeps the newest when they do not all fit). */
  get chunks(): readonly ExtraChunk[] {
    return this.ring;
  }

  get pending(): number {
    return this.queue.length;
  }

  /** Queues the chunk of `text` (a whole file) around line `line`. */
  pickAround(filename: string, text: string, line: number): void {
    const { chunkLines, scopeLines, maxChunks } = this.limits();
    if (maxChunks <= 0) return;
    const lines = text.split("\n");
    const scopeStart = Math.max(0, line - Math.floor(scopeLines / 2));
    const scopeEnd = Math.min(lines.length, scopeStart + scopeLines);
    // The chunk centred on the line, inside the scope.
    const start = Math.max(scopeStart, Math.min(line - Math.floor(chunkLines / 2), scopeEnd - chunkLines));
    this.add({ filename, text: lines.slice(Math.max(0, start), Math.max(0, start) + chunkLines).join("\n") });
  }

  /** Queues copied text (at most one chunk's worth of lines). */
  pickText(filename: string, text: string): void {
    const { chunkLines, maxChunks } = this.limits();
    if (maxChunks <= 0) return;
    this.add({ filename, text: text.split("\n").slice(0, chunkLines).join("\n") });
  }

  private add(chunk: ExtraChunk): void {
    if (chunk.text.trim().length < 8) return; // nothing worth a header
    this.queue = this.queue.filter((c) => !similar(c, chunk));
    this.queue.push(chunk);
    const { maxChunks } = this.limits();
    if (this.queue.length > maxChunks) this.queue.splice(0, this.queue.length - maxChunks);
  }

  /** Moves queued chunks into the ring (deduplicated, oldest evicted); true when the ring changed. */
  flush(): boolean {
    if (!this.queue.length) return false;
    const { maxChunks } = this.limits();
    let changed = false;
    for (const chunk of this.queue) {
      const same = this.ring.findIndex((c) => c.filename === chunk.filename && c.text === chunk.text);
      if (same >= 0) continue; // already there: keep its place, the prompt stays cached
      this.ring = this.ring.filter((c) => !similar(c, chunk));
      this.ring.push(chunk);
      changed = true;
    }
    this.queue = [];
    if (this.ring.length > maxChunks) {
      this.ring.splice(0, this.ring.length - maxChunks);
      changed = true;
    }
    if (changed) this.version++;
    return changed;
  }

  clear(): void {
    this.ring = [];
    this.queue = [];
    this.version++;
  }
}

/** Two chunks of one file that share most of their lines (llama.vscode uses 0.9 Jaccard similarity). */
function similar(a: ExtraChunk, b: ExtraChunk): boolean {
  if (a.filename !== b.filename) return false;
  const la = new Set(a.text.split("\n"));
  const lb = new Set(b.text.split("\n"));
  let shared = 0;
  for (const l of la) if (lb.has(l)) shared++;
  return shared / (la.size + lb.size - shared) > 0.5;
}
