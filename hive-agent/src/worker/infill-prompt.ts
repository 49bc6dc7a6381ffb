// The token layout of a fill-in-the-middle prompt, chosen so that typing re-evaluates few tokens.
//
//   BOS, [extra context], <PRE> prefix <SUF> suffix <MID>
//
// A slot keeps the KV cache of its last prompt; the next request evaluates only what follows the
// first differing token. Typing changes the prompt at the cursor (the end of the prefix), so the
// cost of a keystroke is the new prefix tokens plus everything after them: the suffix. Hence:
//  - the extra context (other files) goes first, where keystrokes never reach it;
//  - the suffix is capped (as llama-server caps it: a quarter of its default 2048-token batch);
//  - the prefix is capped too, but its front edge moves in steps of a quarter of the cap, not with
//    every token, so a long prefix stays cached while the user types (llama-server cuts it token
//    by token, and then re-evaluates all of it on every keystroke).

import type { Token } from "node-llama-cpp";

export interface InfillVocab {
  /** Plain text to tokens (no special tokens parsed, no BOS). */
  tokenize(text: string): Token[];
  bos: Token[];
  pre: Token;
  suf: Token;
  /** Absent in suffix-first models (then the layout is <SUF> suffix <PRE> prefix). */
  mid: Token | null;
  /** Repo-level FIM tokens (Qwen2.5-Coder's <|repo_name|> and <|file_sep|>), when the model has them. */
  repoName: Token | null;
  fileSep: Token | null;
}

export interface InfillParts {
  prefix: string;
  suffix: string;
  extra?: readonly { text: string; filename?: string }[];
}

export interface InfillLimits {
  prefixTokens: number;
  suffixTokens: number;
  extraTokens: number;
}

/** llama-server's caps at its default batch of 2048: prefix 3/4 of it, suffix 1/4 less two. */
const PREFIX_CAP = 1536;
const SUFFIX_CAP = 510;

/** The caps for a slot of `contextSize` tokens that generates up to `maxTokens`. */
export function infillLimits(contextSize: number, maxTokens: number): InfillLimits {
  const prefixTokens = Math.min(PREFIX_CAP, Math.floor((contextSize * 3) / 8));
  const suffixTokens = Math.min(SUFFIX_CAP, Math.floor(contextSize / 8));
  // As llama-server: what the prefix and suffix may take, room for the generation, and the markers
  // are kept free; the extra context gets the rest — whatever the prefix's actual length, so that
  // a growing prefix never pushes a chunk out (and the whole prompt out of the cache). The room
  // for the generation has a floor, so a warm-up (max_tokens 0) and the completions after it
  // (a few dozen tokens) lay out the same chunks.
  const generation = Math.max(2 * maxTokens, Math.floor(contextSize / 16));
  const extraTokens = Math.max(0, contextSize - prefixTokens - suffixTokens - generation - 8);
  return { prefixTokens, suffixTokens, extraTokens };
}

export interface InfillLayout {
  tokens: Token[];
  /** Tokens of each part as sent (after the caps), for the caller's accounting. */
  extraTokens: number;
  prefixTokens: number;
  suffixTokens: number;
  /** Chunks of extra context left out because they did not fit (the oldest ones). */
  extraChunksDropped: number;
}

export function layoutInfill(v: InfillVocab, parts: InfillParts, limits: InfillLimits): InfillLayout {
  const extra = extraBlock(v, parts.extra ?? [], limits.extraTokens);
  let prefix = v.tokenize(parts.prefix);
  if (prefix.length > limits.prefixTokens) {
    const step = Math.max(1, Math.floor(limits.prefixTokens / 4));
    const drop = Math.ceil((prefix.length - limits.prefixTokens) / step) * step;
    prefix = prefix.slice(drop);
  }
  const suffix = v.tokenize(parts.suffix).slice(0, limits.suffixTokens);
  const body = v.mid != null ? [v.pre, ...prefix, v.suf, ...suffix, v.mid] : [v.suf, ...suffix, v.pre, ...prefix];
  return {
    tokens: [...v.bos, ...extra.tokens, ...body],
    extraTokens: extra.tokens.length,
    prefixTokens: prefix.length,
    suffixTokens: suffix.length,
    extraChunksDropped: extra.dropped,
  };
}

/**
 * The other files' chunks as the model was trained to see a repository: with repo-level FIM
 * tokens `<|repo_name|>name\n<|file_sep|>path\ntext…<|file_sep|>current\n`, else each chunk under a
 * plain header line. The newest chunks (the end of the list) are kept whole; older ones that do
 * not fit are left out whole, never cut in the middle.
 */
function extraBlock(
  v: InfillVocab,
  chunks: readonly { text: string; filename?: string }[],
  budget: number,
): { tokens: Token[]; dropped: number } {
  if (!chunks.length || budget <= 0) return { tokens: [], dropped: chunks.length };
  const repo = v.repoName != null && v.fileSep != null;
  const head = repo ? [v.repoName!, ...v.tokenize("project\n")] : [];
  const tail = repo ? [v.fileSep!, ...v.tokenize("current\n")] : v.tokenize("\n--- current file ---\n");
  let left = budget - head.length - tail.length;
  const kept: Token[][] = [];
  for (let i = chunks.length - 1; i >= 0; i--) {
    const c = chunks[i];
    const name = c.filename || "snippet";
    const body = repo
      ? [v.fileSep!, ...v.tokenize(`${name}\n${ensureNewline(c.text)}`)]
      : v.tokenize(`\n--- ${name} ---\n${ensureNewline(c.text)}`);
    if (body.length > left) break;
    left -= body.length;
    kept.unshift(body);
  }
  if (!kept.length) return { tokens: [], dropped: chunks.length };
  return { tokens: [...head, ...kept.flat(), ...tail], dropped: chunks.length - kept.length };
}

function ensureNewline(text: string): string {
  return text.endsWith("\n") ? text : `${text}\n`;
}
