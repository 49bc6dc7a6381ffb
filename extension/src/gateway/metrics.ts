// The gateway's counters, served as Prometheus text at GET /metrics: requests, queue depth, requests in
// flight, tokens and tokens/s, time to first token, failovers and refusals, by node and model.

type Labels = Record<string, string>;

const TTFT_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

function key(labels: Labels): string {
  return Object.keys(labels)
    .sort()
    .map((k) => `${k}="${escapeLabel(labels[k])}"`)
    .join(",");
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

class Series {
  readonly values = new Map<string, number>();
  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: "counter" | "gauge",
  ) {}
  add(labels: Labels, by = 1) {
    const k = key(labels);
    this.values.set(k, (this.values.get(k) ?? 0) + by);
  }
  set(labels: Labels, v: number) {
    this.values.set(key(labels), v);
  }
  render(): string {
    let out = `# HELP ${this.name} ${this.help}\n# TYPE ${this.name} ${this.type}\n`;
    for (const [k, v] of this.values) out += `${this.name}${k ? `{${k}}` : ""} ${v}\n`;
    return out;
  }
}

class Histogram {
  private readonly data = new Map<string, { counts: number[]; sum: number; count: number }>();
  constructor(
    readonly name: string,
    readonly help: string,
    readonly buckets: number[],
  ) {}
  observe(labels: Labels, v: number) {
    const k = key(labels);
    let d = this.data.get(k);
    if (!d) this.data.set(k, (d = { counts: this.buckets.map(() => 0), sum: 0, count: 0 }));
    this.buckets.forEach((b, i) => v <= b && d.counts[i]++);
    d.sum += v;
    d.count++;
  }
  render(): string {
    let out = `# HELP ${this.name} ${this.help}\n# TYPE ${this.name} histogram\n`;
    for (const [k, d] of this.data) {
      const sep = k ? "," : "";
      this.buckets.forEach((b, i) => (out += `${this.name}_bucket{${k}${sep}le="${b}"} ${d.counts[i]}\n`));
      out += `${this.name}_bucket{${k}${sep}le="+Inf"} ${d.count}\n${this.name}_sum${k ? `{${k}}` : ""} ${d.sum}\n${this.name}_count${k ? `{${k}}` : ""} ${d.count}\n`;
    }
    return out;
  }
}

export class GatewayMetrics {
  readonly requests = new Series(
    "rbee_gateway_requests_total",
    "Requests answered, by API, model, node and HTTP status.",
    "counter",
  );
  readonly queueDepth = new Series("rbee_gateway_queue_depth", "Requests waiting for a slot, by model.", "gauge");
  readonly inflight = new Series("rbee_gateway_inflight", "Requests generating, by node and model.", "gauge");
  readonly tokens = new Series(
    "rbee_gateway_tokens_generated_total",
    "Tokens generated, by node and model.",
    "counter",
  );
  readonly tokensPerSecond = new Series(
    "rbee_gateway_tokens_per_second",
    "Decode speed of the last finished request, by node and model.",
    "gauge",
  );
  readonly failovers = new Series(
    "rbee_gateway_failovers_total",
    "Requests moved to another worker because theirs failed before the first token.",
    "counter",
  );
  readonly rejected = new Series(
    "rbee_gateway_rejected_total",
    "Requests refused by the queue (reason queue_full: 429, wait_timeout: 503).",
    "counter",
  );
  readonly ttft = new Histogram(
    "rbee_gateway_time_to_first_token_seconds",
    "From the request's arrival to its first token, by node and model.",
    TTFT_BUCKETS_S,
  );

  render(): string {
    return [
      this.requests,
      this.queueDepth,
      this.inflight,
      this.tokens,
      this.tokensPerSecond,
      this.failovers,
      this.rejected,
      this.ttft,
    ]
      .map((s) => s.render())
      .join("");
  }
}
