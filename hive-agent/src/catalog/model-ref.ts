// Model references (docs/protocol.md): where a model comes from and where it lives in the node's catalog.
//   hf:owner/repo/file.gguf   a file of a Hugging Face repo (HF_ENDPOINT, HF_TOKEN)
//   hf:owner/repo             the repo's GGUF of the preferred quantization
//   https://host/path/x.gguf  any URL (http:// is accepted for loopback test servers only)
//   file:/abs/path.gguf       a file already on the node
//   name.gguf                 a file inside the node's models folder

import { createHash } from "node:crypto";
import path from "node:path";
import { RbeeError } from "../protocol";

export type ModelRef =
  | { kind: "hf"; owner: string; repo: string; file?: string; revision: string }
  | { kind: "url"; url: URL }
  | { kind: "file"; path: string }
  | { kind: "catalog"; name: string };

const SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

function refuse(ref: string, why: string): never {
  throw new RbeeError("INVALID_REQUEST", `model_ref "${ref}" is not valid: ${why}`, { field: "model_ref" });
}

/** A relative path made only of safe segments: no "..", no absolute part, nothing hidden. */
function safeRelative(ref: string, rel: string): string {
  const parts = rel.split("/");
  if (!parts.every((p) => SEGMENT.test(p) && p !== "." && p !== ".."))
    refuse(ref, "path segments may only use letters, digits, '.', '_' and '-' and may not escape the models folder");
  return parts.join("/");
}

export function parseModelRef(ref: string): ModelRef {
  if (ref.startsWith("hf:")) {
    const [pathPart, revision = "main"] = ref.slice(3).split("@");
    const parts = pathPart.split("/");
    if (parts.length < 2) refuse(ref, "expected hf:owner/repo or hf:owner/repo/file.gguf");
    safeRelative(ref, pathPart);
    if (!SEGMENT.test(revision)) refuse(ref, "bad revision");
    const file = parts.length > 2 ? parts.slice(2).join("/") : undefined;
    if (file && !file.endsWith(".gguf")) refuse(ref, "the file must be a .gguf");
    return { kind: "hf", owner: parts[0], repo: parts[1], file, revision };
  }
  if (ref.startsWith("https://") || ref.startsWith("http://")) {
    let url: URL;
    try {
      url = new URL(ref);
    } catch {
      refuse(ref, "not a URL");
    }
    if (url.protocol === "http:" && !isLoopback(url.hostname))
      refuse(ref, "plain http is only allowed to loopback; use https");
    if (!url.pathname.endsWith(".gguf")) refuse(ref, "the URL must name a .gguf file");
    return { kind: "url", url };
  }
  if (ref.startsWith("file:")) {
    const p = ref.slice(5).replace(/^\/\/(?=\/)/, "");
    if (!path.isAbsolute(p)) refuse(ref, "file: needs an absolute path (file:/abs/path.gguf)");
    if (!p.endsWith(".gguf")) refuse(ref, "the file must be a .gguf");
    return { kind: "file", path: path.normalize(p) };
  }
  if (ref.includes(":")) refuse(ref, "unknown scheme; use hf:, https:, file: or a name in the models folder");
  const name = safeRelative(ref, ref);
  if (!name.endsWith(".gguf")) refuse(ref, "the file must be a .gguf");
  return { kind: "catalog", name };
}

export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "");
  return h === "localhost" || h === "::1" || /^127\.\d+\.\d+\.\d+$/.test(h);
}

/** Where a downloadable ref is stored, relative to the models folder. */
export function catalogPathOf(ref: ModelRef, resolvedFile?: string): string {
  switch (ref.kind) {
    case "hf":
      return path.posix.join("hf", ref.owner, ref.repo, ref.file ?? resolvedFile ?? "model.gguf");
    case "url":
      // The whole URL's hash keeps two URLs with the same host and file name apart.
      return path.posix.join(
        "url",
        ref.url.hostname.replace(/[^A-Za-z0-9.-]/g, "_"),
        createHash("sha256").update(ref.url.toString()).digest("hex").slice(0, 16),
        path.posix.basename(ref.url.pathname),
      );
    case "catalog":
      return ref.name;
    case "file":
      throw new Error("file: refs are not stored in the catalog");
  }
}

/** Quantizations in order of preference when a ref names only a repo. */
export const PREFERRED_QUANTS = ["Q4_K_M", "Q5_K_M", "Q4_K_S", "Q8_0", "Q6_K", "Q4_0", "F16"];

export function pickQuantization(files: string[]): string | undefined {
  const ggufs = files.filter((f) => f.endsWith(".gguf") && !/mmproj/i.test(f));
  for (const q of PREFERRED_QUANTS) {
    const hit = ggufs.find((f) => f.toUpperCase().includes(q));
    if (hit) return hit;
  }
  return ggufs[0];
}
