// The QuickPicks shared by "rbee: Infer", Start Worker, Download Model and the chat's model picker.

import * as vscode from "vscode";
import type { DownloadProgressEvent } from "@rbee/hive-agent/protocol";
import type { RbeeServices } from "../../ui-core/services";
import { formatBytes, modelShortName, nodeDescription } from "../../ui-core/nodes/node-format";
import type { NodeSnapshot } from "../../ui-core/nodes/node-snapshot";
import {
  modelChoices,
  modelRefProblem,
  rememberRecent,
  SUGGESTED_MODELS,
  typedRefChoice,
  type ModelSource,
} from "../../ui-core/infer/model-choices";

const RECENT_KEY = "rbee.recentModels";

export function recentModels(memento: vscode.Memento): string[] {
  const v = memento.get<unknown>(RECENT_KEY);
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : [];
}

export async function rememberModel(memento: vscode.Memento, ref: string): Promise<void> {
  await memento.update(RECENT_KEY, rememberRecent(recentModels(memento), ref));
}

/** What the pickers know of the nodes: the node list and the tree's latest snapshots. */
export interface NodePickerSource {
  list(): Promise<{ name: string; host: string }[]>;
  snapshot(node: string): NodeSnapshot | undefined;
  /** Shows a download's progress under its node (the Remote Nodes tree). */
  downloadEvent?(node: string, model: string, e: DownloadProgressEvent | undefined): void;
}

/** A node name, or undefined when dismissed. One node only (localhost): no question asked. */
export async function pickNode(source: NodePickerSource, title: string): Promise<string | undefined> {
  const nodes = await source.list();
  if (nodes.length === 1) return nodes[0].name;
  const picked = await vscode.window.showQuickPick(
    nodes.map((n) => {
      const s = source.snapshot(n.name);
      return { label: n.name, description: n.host, detail: s ? nodeDescription(s) : "status not checked yet" };
    }),
    { title, placeHolder: "Node", ignoreFocusOut: true },
  );
  return picked?.label;
}

const SOURCE_LABEL: Record<ModelSource, string> = {
  running: "running",
  catalog: "on the node",
  recent: "recent",
  configured: "from settings",
};
const TYPE_A_REF = "$(edit) Enter a model reference…";

/**
 * A model ref for `node`: what runs there, its catalog, recent and configured models, a ref typed
 * into the filter box (Enter takes it), or, for a newcomer with none of these, a suggested model.
 */
export async function pickModel(
  services: RbeeServices,
  node: string,
  recent: string[],
  configured: string[],
  title: string,
): Promise<string | undefined> {
  const { running, catalog, sizes } = await nodeModels(services, node);
  const choices = modelChoices({ running, catalog, recent, configured: configured.filter(Boolean) });
  type Item = vscode.QuickPickItem & { ref?: string };
  const items: Item[] = choices.map((c) => ({
    label: modelShortName(c.ref),
    description: [SOURCE_LABEL[c.source], sizes.get(c.ref)].filter(Boolean).join(" · "),
    detail: c.ref,
    ref: c.ref,
  }));
  // Nothing of one's own yet: suggest small models that work on any machine (downloaded on first use).
  if (!choices.length)
    for (const m of SUGGESTED_MODELS)
      items.push({
        label: `$(star-empty) ${m.label}`,
        description: "suggested · downloaded on first use",
        detail: m.detail,
        ref: m.ref,
      });
  items.push({
    label: TYPE_A_REF,
    detail: "or type it in the box above: hf:owner/repo[/file.gguf] · https://…/model.gguf · file:/abs/path.gguf",
    alwaysShow: true,
  });

  const qp = vscode.window.createQuickPick<Item>();
  qp.title = title;
  qp.placeholder = choices.length
    ? "Model (or type a model reference)"
    : "No model yet: pick the suggested one, or type a reference (hf:owner/repo/file.gguf)";
  qp.matchOnDetail = true;
  qp.ignoreFocusOut = true;
  qp.items = items;
  // A typed ref the list does not hold becomes the first item, so Enter takes it.
  qp.onDidChangeValue((value) => {
    const typed = typedRefChoice(
      value,
      choices.map((c) => c.ref),
    );
    qp.items = typed
      ? [
          {
            label: `$(arrow-right) Use ${modelShortName(typed)}`,
            description: "typed",
            detail: typed,
            ref: typed,
            alwaysShow: true,
          },
          ...items,
        ]
      : items;
  });
  const picked = await new Promise<Item | undefined>((resolve) => {
    qp.onDidAccept(() => resolve(qp.selectedItems[0] ?? qp.activeItems[0]));
    qp.onDidHide(() => resolve(undefined));
    qp.show();
  });
  qp.dispose();
  if (!picked) return undefined;
  if (picked.ref) return picked.ref;
  return typeModelRef(title);
}

export async function typeModelRef(title: string): Promise<string | undefined> {
  const typed = await vscode.window.showInputBox({
    title,
    prompt: "Model reference",
    placeHolder: "hf:owner/repo/file.gguf",
    ignoreFocusOut: true,
    validateInput: (v) => modelRefProblem(v),
  });
  return typed?.trim() || undefined;
}

/** Models running on and stored on a node: asked of its hive when it runs, else as the registry last knew them. */
export async function nodeModels(
  services: RbeeServices,
  node: string,
): Promise<{ running: string[]; catalog: string[]; sizes: Map<string, string> }> {
  const result = (
    workers: { model_ref: string; state: string }[],
    models: { model_ref: string; size_bytes: number }[],
  ) => ({
    running: workers.filter((w) => w.state !== "stopping").map((w) => w.model_ref),
    catalog: models.map((m) => m.model_ref),
    sizes: new Map(models.map((m) => [m.model_ref, formatBytes(m.size_bytes)])),
  });
  try {
    const hive = await (await services.controller(node)).hive(false);
    return result(await hive.workers(), await hive.models());
  } catch {
    // not running (or unreachable): fall back to what the registry remembers
  }
  try {
    const { registry } = await services.get();
    return result(await registry.listWorkers({ node }), await registry.listModels(node));
  } catch {
    return { running: [], catalog: [], sizes: new Map() };
  }
}
