// The model list of the pickers ("rbee: Infer", Start Worker, the chat's model picker): what runs,
// what the node has, what was used recently, what is configured — each model once, in that order.

import { RbeeError } from "@rbee/hive-agent/protocol";
import { parseModelRef } from "@rbee/hive-agent/catalog/model-ref";

export type ModelSource = "running" | "catalog" | "recent" | "configured";

export interface ModelChoice {
  ref: string;
  source: ModelSource;
}

const ORDER: ModelSource[] = ["running", "catalog", "recent", "configured"];

export function modelChoices(lists: Partial<Record<ModelSource, readonly string[]>>): ModelChoice[] {
  const seen = new Set<string>();
  const out: ModelChoice[] = [];
  for (const source of ORDER) {
    for (const ref of lists[source] ?? []) {
      if (!ref || seen.has(ref)) continue;
      seen.add(ref);
      out.push({ ref, source });
    }
  }
  return out;
}

/** `recent` with `ref` moved to the front, at most `max` long. */
export function rememberRecent(recent: readonly string[], ref: string, max = 10): string[] {
  return [ref, ...recent.filter((r) => r !== ref)].slice(0, max);
}

/** An InputBox validation message for a typed model ref, or undefined when it is valid. */
export function modelRefProblem(ref: string): string | undefined {
  const value = ref.trim();
  if (!value) return "Type a model: hf:owner/repo[/file.gguf], https://…/model.gguf or file:/abs/path.gguf";
  try {
    parseModelRef(value);
    return undefined;
  } catch (e) {
    return e instanceof RbeeError ? e.message : String(e);
  }
}

/** What the picker suggests to someone with no model yet: small enough for a CPU, good at code. */
export const SUGGESTED_MODELS: readonly { ref: string; label: string; detail: string }[] = [
  {
    ref: "hf:Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF/qwen2.5-coder-0.5b-instruct-q8_0.gguf",
    label: "Qwen2.5-Coder 0.5B Instruct (Q8_0)",
    detail: "suggested for a first try: about 0.5 GB, fast on a CPU; chat, Infer and completions",
  },
  {
    ref: "hf:Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF/qwen2.5-coder-1.5b-instruct-q8_0.gguf",
    label: "Qwen2.5-Coder 1.5B Instruct (Q8_0)",
    detail: "better answers, about 1.6 GB; a GPU or a fast CPU",
  },
];

/** The ref typed into the model picker's filter box, when it is a valid ref the list does not hold. */
export function typedRefChoice(value: string, listed: readonly string[]): string | undefined {
  const ref = value.trim();
  if (!ref || listed.includes(ref) || modelRefProblem(ref)) return undefined;
  return ref;
}
