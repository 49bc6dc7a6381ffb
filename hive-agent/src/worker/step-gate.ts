// Lines up the token loops of concurrent generations on one context, so node-llama-cpp decodes their
// next tokens in one batch (continuous batching, as llama-server does).
//
// Why: node-llama-cpp's batch loop looks for queued tokens as soon as a batch's samplings settle. The
// sequence sampled last is still a few microtasks away from queueing its next token then, so it always
// misses that batch: 2 streams ran as 2 batches of 1 token per step, 4 streams as 3 + 1
// (test/bench/FINDINGS.md §2f). Holding each generation at the gate until every member has taken its
// token makes them all queue in the same tick, after the loop has gone idle, so the next dispatch
// takes all of them at once.
//
// The members go on in the order of their sequence ids: with a per-sequence KV cache (node-llama-cpp
// gives no unified one), llama.cpp puts only a run of consecutive, increasing sequence ids into one
// micro-batch (llama-batch.cpp split_equal), so a batch queued as seq 1, 2, 3, 0 is computed as 3 + 1.
//
// Members join once they have their first token (a prompt being evaluated must not hold the others)
// and leave when they stop for any reason. A lone member never waits.

export class StepGate {
  private members = 0;
  private waiting: Array<{ order: number; go: () => void }> = [];

  /** `order`: the member's sequence id; waiting members are let go in increasing order. */
  join(order: number): StepGateMember {
    this.members++;
    let left = false;
    return {
      arrive: () => (left ? undefined : this.arrive(order)),
      leave: () => {
        if (left) return;
        left = true;
        this.members--;
        this.releaseIfAllArrived();
      },
    };
  }

  /** How many generations are lined up now (for tests and diagnostics). */
  get size(): number {
    return this.members;
  }

  /** Whether some member is held now; the last one to arrive lets them all queue their next tokens. */
  get holding(): boolean {
    return this.waiting.length > 0;
  }

  private arrive(order: number): Promise<void> | undefined {
    if (this.members <= 1 && this.waiting.length === 0) return undefined;
    const arrived = new Promise<void>((go) => this.waiting.push({ order, go }));
    this.releaseIfAllArrived();
    return arrived;
  }

  private releaseIfAllArrived() {
    if (this.waiting.length === 0 || this.waiting.length < this.members) return;
    const release = this.waiting.sort((a, b) => a.order - b.order);
    this.waiting = [];
    // Continuations run in the order the promises resolve, so the next tokens are queued in it too —
    // but only for members already awaiting: the one arriving last has not awaited yet, so it is let
    // go a microtask later, once it has.
    queueMicrotask(() => {
      for (const member of release) member.go();
    });
  }
}

export interface StepGateMember {
  /** Resolves when every member has arrived (in sequence-id order); undefined (no wait at all) when this member is alone. */
  arrive(): Promise<void> | undefined;
  /** Idempotent; releases the others if they were only waiting for this one. */
  leave(): void;
}
