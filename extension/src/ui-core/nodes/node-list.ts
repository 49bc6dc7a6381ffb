// Which nodes the extension knows: localhost always, first, then whatever the sources list (the SSH
// config's hosts come in as one source). The UI only ever asks this list, so adding a source changes
// no view code. Connections are routed by the keeper stack (stack/keeper-stack.ts), shared with the CLI
// (the extension's SSH side keeps two connections per node, see ssh-node.ts).

export type NodeTransportKind = "loopback" | "ssh";

export interface NodeEntry {
  /** The name used everywhere (registry, settings, keeper): "localhost" or an SSH Host alias. */
  name: string;
  /** The address it resolves to, for display. */
  host: string;
  transport: NodeTransportKind;
}

export interface NodeSource {
  /** Names the source in error messages ("~/.ssh/config"). */
  readonly description: string;
  list(): Promise<NodeEntry[]>;
}

export const LOCALHOST_ENTRY: NodeEntry = { name: "localhost", host: "127.0.0.1", transport: "loopback" };

export interface NodeListing {
  nodes: NodeEntry[];
  /** Sources that could not be read (a broken ssh config must not hide localhost). */
  errors: { source: string; message: string }[];
}

export class NodeList {
  constructor(private readonly sources: readonly NodeSource[] = []) {}

  /** The sources, for messages ("~/.ssh/config"). */
  describeSources(): string {
    return this.sources.map((s) => s.description).join(", ") || "no other sources";
  }

  async list(): Promise<NodeListing> {
    const nodes: NodeEntry[] = [LOCALHOST_ENTRY];
    const seen = new Set([LOCALHOST_ENTRY.name]);
    const errors: NodeListing["errors"] = [];
    for (const source of this.sources) {
      try {
        for (const n of await source.list()) {
          if (seen.has(n.name)) continue;
          seen.add(n.name);
          nodes.push(n);
        }
      } catch (e) {
        errors.push({ source: source.description, message: (e as Error).message });
      }
    }
    return { nodes, errors };
  }
}
