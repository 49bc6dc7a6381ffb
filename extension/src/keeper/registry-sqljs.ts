// Loads sql.js (SQLite compiled to WebAssembly) once per process.
// The .wasm file is read by us and handed over as `wasmBinary`, so sql.js never has to guess its own
// location: once esbuild has bundled sql.js's JS into dist/*.js, its `__dirname` is dist/, not
// node_modules/sql.js/dist/. esbuild.mjs copies sql-wasm.wasm next to the bundles for that case.

import initSqlJs from "sql.js";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { RegistryError } from "./registry-types";

export type SqlJs = initSqlJs.SqlJsStatic;
export type SqlDatabase = initSqlJs.Database;

const WASM_FILE = "sql-wasm.wasm";

/** Where the wasm may be, in order: the caller's path, next to this (bundled) file, the sql.js package. */
export function sqlWasmCandidates(explicitPath?: string): string[] {
  const candidates: string[] = [];
  if (explicitPath) candidates.push(path.resolve(explicitPath));
  candidates.push(path.join(__dirname, WASM_FILE));
  try {
    candidates.push(require.resolve(`sql.js/dist/${WASM_FILE}`));
  } catch {
    // not installed next to this bundle: the other candidates must do
  }
  return candidates;
}

let loading: { promise: Promise<SqlJs>; wasmPath: string } | undefined;

/** Resolves to the sql.js module. The first successful call decides which wasm file the process uses. */
export function loadSqlJs(explicitWasmPath?: string): Promise<SqlJs> {
  if (loading) return loading.promise;
  const tried = sqlWasmCandidates(explicitWasmPath);
  // An explicit path is a promise by the caller: do not fall back silently when it is wrong.
  const wasmPath = explicitWasmPath ? (existsSync(tried[0]) ? tried[0] : undefined) : tried.find((p) => existsSync(p));
  if (!wasmPath) {
    return Promise.reject(
      new RegistryError(
        "REGISTRY_WASM_NOT_FOUND",
        `cannot find sql.js's ${WASM_FILE} (looked at: ${tried.join(", ")}). ` +
          `Reinstall rbee, or pass the file's path as the registry's wasmPath option.`,
        { tried },
      ),
    );
  }
  const bytes = readFileSync(wasmPath);
  const wasmBinary = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  const promise = initSqlJs({ wasmBinary });
  loading = { promise, wasmPath };
  promise.catch(() => {
    if (loading?.promise === promise) loading = undefined; // let a later call try again
  });
  return promise;
}

/** The wasm file this process loaded, for diagnostics; undefined before the first load. */
export function loadedSqlWasmPath(): string | undefined {
  return loading?.wasmPath;
}
