// The node's model catalog: which model refs are present and where their files are.
// Downloaded files live under <home>/models; an index (catalog.json, written atomically) remembers
// which ref each file came from. GGUF files dropped into the folder by hand are listed by name.

import { createHash } from "node:crypto";
import {
  closeSync,
  createReadStream,
  existsSync,
  mkdirSync,
  openSync,
  readSync,
  readdirSync,
  readFileSync,
  renameSync,
  statSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { RbeeError, type ModelEntry } from "../protocol";
import { catalogPathOf, parseModelRef } from "./model-ref";

interface IndexFile {
  version: 1;
  entries: Record<string, { local_path: string; size_bytes: number; sha256?: string }>;
}

export class Catalog {
  readonly dir: string;
  private readonly indexPath: string;

  constructor(home: string) {
    this.dir = path.join(home, "models");
    mkdirSync(this.dir, { recursive: true });
    this.indexPath = path.join(this.dir, "catalog.json");
  }

  private readIndex(): IndexFile {
    try {
      const data = JSON.parse(readFileSync(this.indexPath, "utf8")) as IndexFile;
      if (data.version === 1 && typeof data.entries === "object") return data;
    } catch {
      // Missing or unreadable: start empty; the files themselves are still listed by name below.
    }
    return { version: 1, entries: {} };
  }

  private writeIndex(index: IndexFile) {
    const tmp = `${this.indexPath}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(index, null, 2));
    renameSync(tmp, this.indexPath);
  }

  /** Absolute path inside the models folder for a relative catalog path, refusing any escape. */
  pathInside(rel: string): string {
    const abs = path.resolve(this.dir, rel);
    if (!abs.startsWith(this.dir + path.sep))
      throw new RbeeError("INVALID_REQUEST", `"${rel}" escapes the models folder`, { field: "model_ref" });
    return abs;
  }

  record(modelRef: string, localPath: string, sha256?: string) {
    const index = this.readIndex();
    index.entries[modelRef] = {
      local_path: localPath,
      size_bytes: statSync(localPath).size,
      ...(sha256 ? { sha256 } : {}),
    };
    this.writeIndex(index);
  }

  list(): ModelEntry[] {
    const index = this.readIndex();
    const out: ModelEntry[] = [];
    const seen = new Set<string>();
    for (const [ref, e] of Object.entries(index.entries)) {
      if (!existsSync(e.local_path)) continue;
      out.push({ model_ref: ref, ...e });
      seen.add(e.local_path);
    }
    for (const file of walkGguf(this.dir)) {
      if (seen.has(file)) continue;
      out.push({
        model_ref: path.relative(this.dir, file).split(path.sep).join("/"),
        local_path: file,
        size_bytes: statSync(file).size,
      });
    }
    return out.sort((a, b) => a.model_ref.localeCompare(b.model_ref));
  }

  /** The local file of a ref, or MODEL_NOT_FOUND with what to do about it. */
  resolve(modelRef: string): string {
    const ref = parseModelRef(modelRef);
    let file: string | undefined;
    if (ref.kind === "file") {
      // The same answer for a missing file, something that is not a regular file (a device, a FIFO
      // that would block) and a file that is not GGUF: the hive tells nothing about other files.
      if (!isGgufFile(ref.path))
        throw new RbeeError(
          "MODEL_NOT_FOUND",
          `${modelRef} is not a GGUF model file on this node (missing, not a regular file, or not GGUF); check the path`,
          { model_ref: modelRef },
        );
      return ref.path;
    } else {
      const indexed = this.readIndex().entries[modelRef];
      if (indexed && existsSync(indexed.local_path)) file = indexed.local_path;
      else if (!(ref.kind === "hf" && !ref.file)) {
        // Not indexed (e.g. the index was lost): look where a download of this ref would have put it.
        const candidate = this.pathInside(catalogPathOf(ref));
        if (existsSync(candidate)) file = candidate;
      }
    }
    if (!file || !existsSync(file) || !statSync(file).isFile())
      throw new RbeeError(
        "MODEL_NOT_FOUND",
        ref.kind === "catalog"
          ? `model ${modelRef} is not on this node; check the path or copy the file into ${this.dir}`
          : `model ${modelRef} is not in this node's catalog; download it first (POST /v1/models/download)`,
        { model_ref: modelRef },
      );
    return file;
  }
}

function* walkGguf(dir: string): Generator<string> {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) yield* walkGguf(p);
    else if (e.isFile() && e.name.endsWith(".gguf")) yield p;
  }
}

export async function sha256File(file: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file)) hash.update(chunk);
  return hash.digest("hex");
}

/** A regular file that starts with the GGUF magic. */
export function isGgufFile(file: string): boolean {
  try {
    if (!statSync(file).isFile()) return false;
    const fd = openSync(file, "r");
    try {
      const head = Buffer.alloc(4);
      return readSync(fd, head, 0, 4, 0) === 4 && head.toString("latin1") === "GGUF";
    } finally {
      closeSync(fd);
    }
  } catch {
    return false;
  }
}
