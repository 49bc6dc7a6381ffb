// The Remote Nodes actions: deploy (localhost: start the hive), start and stop a worker, download
// a model, show a node's log, refresh. Each works from a tree item or, from the command palette,
// asks which node / worker. Failures of an action the user started get one notification each.

import * as vscode from "vscode";
import { RbeeError } from "@rbee/hive-agent/protocol";
import type { KeeperEvent } from "../../keeper/keeper";
import { showError, type RbeeLog } from "../log";
import { progressStep } from "../../ui-core/narration";
import type { RbeeServices } from "../../ui-core/services";
import { pickModel, pickNode, recentModels, rememberModel, typeModelRef } from "../infer/pickers";
import { modelShortName } from "../../ui-core/nodes/node-format";
import type { NodesTree, TreeNode } from "./nodes-tree";
import { pickWorkerOptions, type WorkerOptions } from "./worker-options-picker";

type Progress = vscode.Progress<{ message?: string }>;

export class NodeCommands {
  constructor(
    private readonly services: RbeeServices,
    private readonly tree: NodesTree,
    private readonly log: RbeeLog,
    private readonly memento: vscode.Memento,
  ) {}

  register(): vscode.Disposable {
    return vscode.Disposable.from(
      vscode.commands.registerCommand("rbee.refreshNodes", () => this.tree.refresh({ all: true })),
      vscode.commands.registerCommand("rbee.deployNode", (item?: TreeNode) => this.deploy(item)),
      vscode.commands.registerCommand("rbee.stopHive", () => this.stopLocalHive()),
      vscode.commands.registerCommand("rbee.startWorker", (item?: TreeNode, model?: string, options?: WorkerOptions) =>
        this.startWorker(item, model, options),
      ),
      vscode.commands.registerCommand("rbee.stopWorker", (item?: TreeNode) => this.stopWorker(item)),
      vscode.commands.registerCommand("rbee.downloadModel", (item?: TreeNode, model?: string) =>
        this.downloadModel(item, model),
      ),
      vscode.commands.registerCommand("rbee.showLogs", (item?: TreeNode) => this.showLogs(item)),
    );
  }

  private async nodeOf(item: TreeNode | undefined, title: string): Promise<string | undefined> {
    if (item && "node" in item) return typeof item.node === "string" ? item.node : undefined;
    if (item?.kind === "node") return item.snapshot.node.name;
    return pickNode(this.tree, title);
  }

  private progress<T>(title: string, work: (p: Progress, signal: AbortSignal) => Promise<T>): Promise<T> {
    return Promise.resolve(
      vscode.window.withProgress(
        { location: vscode.ProgressLocation.Notification, title, cancellable: true },
        (p, token) => {
          const abort = new AbortController();
          token.onCancellationRequested(() => abort.abort());
          return work(p, abort.signal);
        },
      ),
    );
  }

  /** `download` (node, model): the download's progress is also shown under the node in the tree. */
  private narrate(p: Progress, context: string, download?: { node: string; model: string }) {
    return (e: KeeperEvent) => {
      this.log.event(e, context);
      if (download && e.kind === "download") this.tree.downloadEvent(download.node, download.model, e.event);
      const step = progressStep(e);
      if (step) p.report({ message: step.message });
    };
  }

  async deploy(item?: TreeNode): Promise<boolean> {
    const node = await this.nodeOf(item, "rbee: Deploy — which node?");
    if (!node) return false;
    const controller = await this.services.controller(node);
    if (
      this.tree.snapshot(node)?.status === "running" &&
      (await controller.hive(false).then(
        () => true,
        () => false,
      ))
    ) {
      // Nothing to do: say so instead of a progress toast that flashes by.
      void vscode.window.showInformationMessage(`rbee: the hive on ${node} is already running.`);
      return true;
    }
    const verb = controller.entry.transport === "loopback" ? "starting the local hive" : `deploying to ${node}`;
    try {
      await this.tree.whileBusy(node, verb, () =>
        this.progress(`rbee: ${verb}`, (p, signal) =>
          controller.deploy(
            this.narrate(p, `[${node}]`),
            (line) => {
              this.log.info(`[${node}] ${line}`);
              p.report({ message: line.slice(0, 120) });
            },
            signal,
          ),
        ),
      );
      this.log.info(`[${node}] hive is running`);
      return true;
    } catch (e) {
      if ((e as Error).name === "AbortError") {
        this.log.info(`[${node}] ${verb} cancelled; the version that ran before (if any) keeps running`);
        return false;
      }
      void showError(this.log, `${verb} failed`, e);
      return false;
    }
  }

  /** Starts a worker; `options` (from a caller or a test) skips the questions, a GPU item presets its device. */
  async startWorker(item?: TreeNode, modelArg?: string, optionsArg?: WorkerOptions): Promise<string | undefined> {
    const node = await this.nodeOf(item, "rbee: Start Worker — on which node?");
    if (!node) return undefined;
    const model =
      modelArg ??
      (await pickModel(this.services, node, recentModels(this.memento), [], `rbee: Start a worker on ${node}`));
    if (!model) return undefined;
    const preset: WorkerOptions =
      item?.kind === "device"
        ? { backend: item.device.backend, device: item.device.index }
        : item?.kind === "cpu"
          ? { backend: "cpu" }
          : {};
    const options =
      optionsArg ??
      (await pickWorkerOptions(
        this.tree.snapshot(node)?.devices ?? [],
        `rbee: Start ${modelShortName(model)} on ${node}`,
        preset,
      ));
    if (!options) return undefined;
    try {
      const worker = await this.tree.whileBusy(node, `starting a worker for ${modelShortName(model)}`, () =>
        this.progress(`rbee: starting ${modelShortName(model)} on ${node}`, async (p, signal) => {
          const keeper = await this.services.keeper();
          try {
            return (
              await keeper.ensureWorker(
                { node, model, ...options },
                this.narrate(p, `[${node}]`, { node, model }),
                signal,
              )
            ).worker;
          } finally {
            this.tree.downloadEvent(node, model, undefined);
          }
        }),
      );
      // Only a model that loaded is offered again as "recent" (a mistyped ref must not become the default).
      await rememberModel(this.memento, model);
      this.log.info(`[${node}] worker ${worker.id} serves ${model}`);
      return worker.id;
    } catch (e) {
      if (e instanceof RbeeError && e.code === "REQUEST_CANCELLED") {
        void vscode.window.showInformationMessage(`rbee: cancelled; ${e.message}.`);
        return undefined;
      }
      void showError(this.log, `starting ${modelShortName(model)} on ${node} failed`, e);
      return undefined;
    }
  }

  async stopWorker(item?: TreeNode): Promise<boolean> {
    let target: { node: string; id: string; model: string } | undefined;
    if (item?.kind === "worker") target = { node: item.node, id: item.worker.id, model: item.worker.model_ref };
    else {
      const { registry } = await this.services.get();
      const workers = await registry.listWorkers();
      const picked = await vscode.window.showQuickPick(
        workers.map((w) => ({
          label: modelShortName(w.model_ref),
          description: `${w.node} · ${w.state}`,
          detail: w.id,
          w,
        })),
        { title: "rbee: Stop which worker?" },
      );
      if (picked) target = { node: picked.w.node, id: picked.w.id, model: picked.w.model_ref };
    }
    if (!target) return false;
    const { node, id, model } = target;
    try {
      await this.tree.whileBusy(node, `stopping ${modelShortName(model)}`, async () => {
        const hive = await (await this.services.controller(node)).hive(false);
        try {
          await hive.shutdown(id);
        } catch (e) {
          // Already gone (idle timeout, crash): what the user wanted is done.
          if (!(e instanceof RbeeError && (e.code === "WORKER_NOT_FOUND" || e.code === "NOT_FOUND"))) throw e;
        }
        await (await this.services.get()).registry.removeWorker(id);
      });
      this.log.info(`[${node}] worker ${id} (${model}) stopped`);
      return true;
    } catch (e) {
      void showError(this.log, `stopping the worker on ${node} failed`, e);
      return false;
    }
  }

  async downloadModel(item?: TreeNode, modelArg?: string): Promise<string | undefined> {
    const node = await this.nodeOf(item, "rbee: Download a model — to which node?");
    if (!node) return undefined;
    const model = modelArg ?? (await typeModelRef(`rbee: Download a model to ${node}`));
    if (!model) return undefined;
    try {
      const path = await this.tree.whileBusy(node, `downloading ${modelShortName(model)}`, () =>
        this.progress(`rbee: downloading ${modelShortName(model)} to ${node}`, async (p, signal) => {
          await (await this.services.controller(node)).hive(true);
          const keeper = await this.services.keeper();
          try {
            // The keeper records the model in the registry, and Cancel stops the download on the node.
            return (await keeper.downloadModel(node, model, this.narrate(p, `[${node}]`, { node, model }), signal))
              .local_path;
          } finally {
            this.tree.downloadEvent(node, model, undefined);
          }
        }),
      );
      await rememberModel(this.memento, model);
      return path;
    } catch (e) {
      if (e instanceof RbeeError && e.code === "REQUEST_CANCELLED") {
        void vscode.window.showInformationMessage(
          `rbee: the download of ${modelShortName(model)} to ${node} was cancelled and stopped on the node.`,
        );
        return undefined;
      }
      void showError(this.log, `downloading ${model} to ${node} failed`, e);
      return undefined;
    }
  }

  /** Stops localhost's hive and its workers (they otherwise outlive VS Code: see rbee.nodes.stopLocalHiveOnExit). */
  async stopLocalHive(): Promise<boolean> {
    try {
      const stopped = await this.tree.whileBusy("localhost", "stopping the local hive", async () => {
        const { local, registry } = await this.services.get();
        const was = await local.stop();
        for (const w of await registry.listWorkers({ node: "localhost" })) await registry.removeWorker(w.id);
        return was;
      });
      void vscode.window.showInformationMessage(
        stopped ? "rbee: the local hive and its workers are stopped." : "rbee: the local hive was not running.",
      );
      return stopped;
    } catch (e) {
      void showError(this.log, "stopping the local hive failed", e);
      return false;
    }
  }

  async showLogs(item?: TreeNode): Promise<void> {
    const node =
      item?.kind === "node"
        ? item.snapshot.node.name
        : item && "node" in item && typeof item.node === "string"
          ? item.node
          : undefined;
    if (!node) return this.log.show();
    try {
      const file = await (await this.services.controller(node)).logFile();
      await vscode.window.showTextDocument(vscode.Uri.file(file), { preview: true });
    } catch (e) {
      void showError(this.log, `opening ${node}'s log failed`, e);
    }
  }
}
