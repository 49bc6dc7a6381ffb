// The environment handed to processes rbee starts (the local hive, workers): only what they need to
// run and find their GPU libraries, never the rest of the parent's environment, which in an editor
// holds whatever secrets its user exported (cloud keys, tokens).

/** Variables passed through by exact name. */
const KEEP = new Set([
  "PATH",
  "HOME",
  "USER",
  "LOGNAME",
  "SHELL",
  "LANG",
  "LANGUAGE",
  "TZ",
  "TMPDIR",
  "TEMP",
  "TMP",
  "LD_LIBRARY_PATH",
  "DYLD_LIBRARY_PATH",
  "DYLD_FALLBACK_LIBRARY_PATH",
  // Windows essentials.
  "SystemRoot",
  "SYSTEMROOT",
  "windir",
  "WINDIR",
  "ComSpec",
  "COMSPEC",
  "PATHEXT",
  "APPDATA",
  "LOCALAPPDATA",
  "USERPROFILE",
  "ProgramData",
  "PROGRAMDATA",
  "ProgramFiles",
  "PROGRAMFILES",
  "ProgramFiles(x86)",
  "NUMBER_OF_PROCESSORS",
  "PROCESSOR_ARCHITECTURE",
]);
/** Variables passed through by prefix: locale, XDG dirs, GPU runtimes, llama.cpp and rbee settings. */
const KEEP_PREFIXES = [
  "LC_",
  "XDG_",
  "CUDA_",
  "NVIDIA_",
  "HIP_",
  "ROCM_",
  "ROCR_",
  "HSA_",
  "GGML_",
  "VK_",
  "NODE_LLAMA_CPP_",
  "OMP_",
  "RBEE_",
];
/** rbee settings that are secrets of their own and never travel further. */
const DROP = new Set(["RBEE_WORKER_KEY", "RBEE_WORKER_CALLBACK_KEY", "RBEE_HIVE_TOKEN"]);

/**
 * A copy of `env` with only the variables above, plus `extra`. `alsoKeep` names more variables to
 * pass (the hive keeps HF_TOKEN/HF_ENDPOINT for downloads; workers do not get them).
 */
export function childEnv(
  env: NodeJS.ProcessEnv,
  extra: NodeJS.ProcessEnv = {},
  alsoKeep: string[] = [],
): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined || DROP.has(k)) continue;
    if (KEEP.has(k) || alsoKeep.includes(k) || KEEP_PREFIXES.some((p) => k.startsWith(p))) out[k] = v;
  }
  return { ...out, ...extra };
}

/** What the hive passes on besides the basics: the Hugging Face settings downloads use. */
export const HIVE_ENV_EXTRA = ["HF_TOKEN", "HF_ENDPOINT", "ELECTRON_RUN_AS_NODE"];
