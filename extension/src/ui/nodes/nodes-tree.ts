// The Remote Nodes view: one item per node (localhost first), with its status, agent version and
// backends; under it its GPUs (free/total VRAM), its workers and its models. It refreshes on an
// interval while visible; a failing node shows its error on its own item — never as notifications.

import * as vscode from "vscode";
import type { DeviceInfo, DownloadProgressEvent, ModelEntry } from "@rbee/hive-agent/protocol";
import type { RbeeServices } from "../../ui-core/services";
import type { RbeeLog } from "../log";
import { nodesSettings } from "../settings";
import type { NodeEntry } from "../../ui-core/nodes/node-list";
import {
  deviceDescription,
  deviceLabel,
  downloadText,
  formatBytes,
  isFirstRun,
  modelDescription,
  modelsShown,
  modelShortName,
  nodeDescription,
  nodeTooltip,
  workerDescription,
  workersOn,
  workerTooltip,
} from "../../ui-core/nodes/node-format";
import {
  shouldAutoProbe,
  uncheckedSnapshot,
  type NodeSnapshot,
  type WorkerView,
} from "../../ui-core/nodes/node-snapshot";

export type TreeNode =
  | { kind: "node"; snapshot: NodeSnapshot }
  | { kind: "device"; node: string; device: DeviceInfo; workers: WorkerView[] }
  | { kind: "cpu"; node: string; snapshot: NodeSnapshot; workers: WorkerView[] }
  | { kind: "worker"; node: string; worker: WorkerView }
  | { kind: "models"; node: string; models: ModelEntry[] }
  | { kind: "model"; node: string; model: ModelEntry; loadedFile?: boolean }
  | { kind: "download"; node: string; model: string; text: string }
  | { kind: "message"; text: string; tooltip?: string };

export class NodesTree implements vscode.TreeDataProvider<TreeNode>, vscode.Disposable {
  private readonly changed = new vscode.EventEmitter<TreeNode | undefined>();
  readonly onDidChangeTreeData = this.changed.event;
  private snapshots = new Map<string, NodeSnapshot>();
  private listingErrors: { source: string; message: string }[] = [];
  /** Nodes an action is working on (deploying, starting a worker), with what it does. */
  private readonly busy = new Map<string, string>();
  /** Downloads this window follows, per node: model ref → how far along it is. */
  private readonly downloads = new Map<string, Map<string, string>>();
  private timer: NodeJS.Timeout | undefined;
  private refreshing: Promise<void> | undefined;
  private loaded = false;
  private readonly refreshed = new vscode.EventEmitter<void>();
  /** Fires after every completed refresh. */
  readonly onDidRefresh = this.refreshed.event;

  constructor(
    private readonly services: RbeeServices,
    private readonly log: RbeeLog,
  ) {}

  /** The latest snapshot of a node (for pickers and tests). */
  snapshot(node: string): NodeSnapshot | undefined {
    return this.snapshots.get(node);
  }

  async list(): Promise<NodeEntry[]> {
    return (await this.services.nodeList.list()).nodes;
  }

  /** Binds the interval refresh to the view's visibility. */
  attach(view: vscode.TreeView<TreeNode>): vscode.Disposable {
    const sync = () => {
      if (view.visible) {
        void this.refresh();
        this.startTimer();
      } else this.stopTimer();
    };
    const sub = view.onDidChangeVisibility(sync);
    const config = vscode.workspace.onDidChangeConfiguration((e) => {
      if (e.affectsConfiguration("rbee.nodes") && view.visible) this.startTimer();
    });
    sync();
    return vscode.Disposable.from(sub, config);
  }

  private startTimer() {
    this.stopTimer();
    this.timer = setInterval(() => void this.refresh(), nodesSettings().refreshSeconds * 1000);
  }

  private stopTimer() {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /**
   * Probes the nodes (in parallel); overlapping calls share one round. The automatic refresh leaves
   * some SSH hosts alone (see shouldAutoProbe); `all` (the Refresh button, after an action) probes every node.
   */
  refresh(opts: { all?: boolean } = {}): Promise<void> {
    this.refreshing ??= this.probeAll(opts.all ?? false).finally(() => {
      this.refreshing = undefined;
      this.refreshed.fire();
    });
    return this.refreshing;
  }

  private async probeAll(all: boolean) {
    const listing = await this.services.nodeList.list();
    this.listingErrors = listing.errors;
    const next = new Map<string, NodeSnapshot>();
    const { registry } = await this.services.get();
    const now = Date.now();
    await Promise.all(
      listing.nodes.map(async (entry) => {
        const previous = this.snapshots.get(entry.name);
        if (!all && !shouldAutoProbe(entry, (await registry.getNode(entry.name)) !== undefined, previous, now)) {
          next.set(entry.name, previous ?? uncheckedSnapshot(entry, now));
          return;
        }
        try {
          next.set(entry.name, await (await this.services.controller(entry.name)).probe());
        } catch (e) {
          next.set(entry.name, {
            node: entry,
            status: "unreachable",
            reason: (e as Error).message,
            backends: [],
            devices: [],
            workers: [],
            models: [],
            checkedAt: Date.now(),
          });
        }
      }),
    );
    for (const [name, s] of next) {
      const before = this.snapshots.get(name);
      if (s.status === "unreachable" && before?.status !== "unreachable")
        this.log.warn(`[nodes] ${name} is unreachable: ${s.reason}`);
    }
    this.snapshots = next;
    this.loaded = true;
    this.changed.fire(undefined);
  }

  /** A download's progress, shown under its node until it ends (`undefined`: it ended or was cancelled). */
  downloadEvent(node: string, model: string, e: DownloadProgressEvent | undefined) {
    const text = e && downloadText(e);
    const onNode = this.downloads.get(node) ?? new Map<string, string>();
    if (text) onNode.set(model, text);
    else onNode.delete(model);
    if (onNode.size) this.downloads.set(node, onNode);
    else this.downloads.delete(node);
    this.changed.fire(undefined);
  }

  /** Downloads shown under a node (for tests). */
  downloadsOn(node: string): { model: string; text: string }[] {
    return [...(this.downloads.get(node) ?? [])].map(([model, text]) => ({ model, text }));
  }

  /** Marks a node as busy (shown as "starting: …") while `work` runs, then refreshes. */
  async whileBusy<T>(node: string, what: string, work: () => Promise<T>): Promise<T> {
    this.busy.set(node, what);
    this.changed.fire(undefined);
    try {
      return await work();
    } finally {
      this.busy.delete(node);
      await this.refresh({ all: true });
    }
  }

  getTreeItem(n: TreeNode): vscode.TreeItem {
    switch (n.kind) {
      case "node": {
        const s = this.withBusy(n.snapshot);
        const item = new vscode.TreeItem(s.node.name, vscode.TreeItemCollapsibleState.Expanded);
        item.id = `node:${s.node.name}`;
        item.description = nodeDescription(s);
        item.tooltip = nodeTooltip(s);
        item.iconPath = new vscode.ThemeIcon(
          s.node.transport === "loopback" ? "vm" : "remote",
          new vscode.ThemeColor(
            s.status === "running"
              ? "testing.iconPassed"
              : s.status === "unreachable"
                ? "testing.iconFailed"
                : "disabledForeground",
          ),
        );
        item.contextValue = `rbee.node.${s.status}.${s.node.transport}`;
        return item;
      }
      case "device": {
        const item = new vscode.TreeItem(
          deviceLabel(n.device),
          n.workers.length ? vscode.TreeItemCollapsibleState.Expanded : vscode.TreeItemCollapsibleState.None,
        );
        // A row VS Code first saw without children stays collapsed when it gains some: a new id when the
        // first worker arrives makes it a new row, shown expanded.
        item.id = `device:${n.node}:${n.device.backend}:${n.device.index}${n.workers.length ? "" : ":empty"}`;
        item.description = deviceDescription(n.device);
        item.tooltip =
          `${deviceLabel(n.device)} — GPU ${n.device.index} as rbee numbers it (a worker "on ${n.device.backend}:${n.device.index}" runs here)\n${formatBytes(n.device.vram_free_bytes)} free for new workers of ${formatBytes(n.device.vram_total_bytes)}` +
          (n.device.vram_reserved_bytes
            ? `\n${formatBytes(n.device.vram_reserved_bytes)} held by rbee's workers here`
            : "");
        item.iconPath = new vscode.ThemeIcon("circuit-board");
        item.contextValue = "rbee.device";
        return item;
      }
      case "cpu": {
        const item = new vscode.TreeItem(
          n.snapshot.devices.length ? "CPU" : "CPU only",
          n.workers.length ? vscode.TreeItemCollapsibleState.Expanded : vscode.TreeItemCollapsibleState.None,
        );
        item.id = `cpu:${n.node}${n.workers.length ? "" : ":empty"}`;
        item.description =
          n.snapshot.ramFreeBytes !== undefined && n.snapshot.ramTotalBytes !== undefined
            ? `${formatBytes(n.snapshot.ramFreeBytes)} RAM free of ${formatBytes(n.snapshot.ramTotalBytes)}`
            : undefined;
        item.tooltip = 'The node\'s processor and RAM: workers without a GPU run here (shown as "cpu" on a worker).';
        item.iconPath = new vscode.ThemeIcon("chip");
        item.contextValue = "rbee.device";
        return item;
      }
      case "worker": {
        const item = new vscode.TreeItem(modelShortName(n.worker.model_ref));
        item.id = `worker:${n.node}:${n.worker.id}`;
        item.description = workerDescription(n.worker);
        item.tooltip = workerTooltip(n.worker);
        item.iconPath = new vscode.ThemeIcon(n.worker.state === "loading" ? "loading~spin" : "server-process");
        item.contextValue = "rbee.worker";
        return item;
      }
      case "models": {
        const item = new vscode.TreeItem(
          `Models (${n.models.length})`,
          n.models.length ? vscode.TreeItemCollapsibleState.Collapsed : vscode.TreeItemCollapsibleState.None,
        );
        item.id = `models:${n.node}`;
        item.iconPath = new vscode.ThemeIcon("library");
        item.contextValue = "rbee.models";
        return item;
      }
      case "model": {
        const item = new vscode.TreeItem(modelShortName(n.model.model_ref));
        item.id = `model:${n.node}:${n.model.model_ref}`;
        item.description = n.loadedFile ? "file, loaded by a worker" : modelDescription(n.model);
        item.tooltip = n.loadedFile
          ? `${n.model.model_ref}\nA model file on the node, not in rbee's catalog (downloads go there); a worker runs it.`
          : `${n.model.model_ref}\n${n.model.local_path}`;
        item.iconPath = new vscode.ThemeIcon("file-binary");
        item.contextValue = "rbee.model";
        return item;
      }
      case "download": {
        const item = new vscode.TreeItem(modelShortName(n.model));
        item.id = `download:${n.node}:${n.model}`;
        item.description = n.text;
        item.tooltip = `Downloading ${n.model} to ${n.node}\n${n.text}`;
        item.iconPath = new vscode.ThemeIcon("cloud-download");
        item.contextValue = "rbee.download";
        return item;
      }
      case "message": {
        const item = new vscode.TreeItem(n.text);
        item.tooltip = n.tooltip;
        item.iconPath = new vscode.ThemeIcon("info");
        return item;
      }
    }
  }

  async getChildren(n?: TreeNode): Promise<TreeNode[]> {
    if (!n) {
      if (!this.loaded) await this.refresh();
      // Nothing set up yet: an empty tree lets VS Code show the welcome view (Try a model, …), which wraps at any width.
      if (isFirstRun([...this.snapshots.values()], this.listingErrors.length, this.busy.size + this.downloads.size))
        return [];
      const nodes: TreeNode[] = [...this.snapshots.values()].map((snapshot) => ({ kind: "node", snapshot }));
      for (const e of this.listingErrors)
        nodes.push({ kind: "message", text: `${e.source}: could not be read`, tooltip: e.message });
      return nodes;
    }
    if (n.kind === "node") {
      const s = n.snapshot;
      const name = s.node.name;
      const downloads = this.downloadsOn(name).map((d): TreeNode => ({ kind: "download", node: name, ...d }));
      if (s.status !== "running") return downloads;
      // Each GPU with the workers placed on it; the CPU with its workers (always on a GPU-less node).
      const out: TreeNode[] = s.devices.map((device): TreeNode => ({
        kind: "device",
        node: name,
        device,
        workers: workersOn(device, s.workers),
      }));
      const cpuWorkers = s.workers.filter(
        (w) => w.backend === "cpu" || !s.devices.some((d) => d.backend === w.backend),
      );
      if (!s.devices.length || cpuWorkers.length)
        out.push({ kind: "cpu", node: name, snapshot: s, workers: cpuWorkers });
      out.push({ kind: "models", node: name, models: modelsShown(s) });
      return [...downloads, ...out];
    }
    if (n.kind === "device" || n.kind === "cpu")
      return n.workers.map((worker): TreeNode => ({ kind: "worker", node: n.node, worker }));
    if (n.kind === "models")
      return n.models.map((model) => ({ kind: "model", node: n.node, model, loadedFile: model.size_bytes < 0 }));
    return [];
  }

  private withBusy(s: NodeSnapshot): NodeSnapshot {
    const what = this.busy.get(s.node.name);
    return what ? { ...s, status: "starting", reason: what } : s;
  }

  dispose() {
    this.stopTimer();
    this.changed.dispose();
    this.refreshed.dispose();
  }
}
