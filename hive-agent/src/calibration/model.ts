// The model calibration decodes with: a llama-architecture GGUF with seeded random q8_0 weights and a
// small SentencePiece-style vocabulary written here in code, made on the node itself (nodes have no
// internet and no test fixtures). Only its shape matters: the matrices are large enough (~25 MB of
// weights, read once per token) that each CPU binary's kernels, not node-llama-cpp's per-token
// overhead, decide the speed, and small enough to be made in a second and measured in a few.
//
// Every candidate must decode the same tokens, so nothing may end a generation early: the measuring
// side never stops at an end-of-generation token (it counts tokens), and the model cannot produce one
// anyway: every embedding carries a constant feature (dimension 0) that the output rows of control
// tokens weigh strongly negative.

import { existsSync, mkdirSync, renameSync, writeFileSync } from "node:fs";
import path from "node:path";
import { f32, str, TensorType, u32, ValueType, writeGguf, type Value } from "../util/gguf";
import { randomLlamaTensors } from "../util/random-llama";

/** Bumped whenever the output changes: it is part of the calibration key (and of the file name). */
export const CALIBRATION_MODEL_VERSION = 1;

export interface CalibrationModelShape {
  nEmbd: number;
  nLayer: number;
  nHead: number;
  nFf: number;
  nVocab: number;
  contextLength: number;
}

export const CALIBRATION_MODEL: CalibrationModelShape = {
  nEmbd: 512,
  nLayer: 6,
  nHead: 8,
  nFf: 1536,
  nVocab: 4096,
  contextLength: 1024,
};

// llama.cpp token types.
const NORMAL = 1,
  UNKNOWN = 2,
  CONTROL = 3,
  BYTE = 6;
/** Ids of the special tokens, as SentencePiece (llama.cpp's "llama" tokenizer) numbers them. */
export const CALIBRATION_TOKENS = { unk: 0, bos: 1, eos: 2, firstByte: 3, firstNormal: 3 + 256 };

/**
 * A SentencePiece vocabulary llama.cpp accepts: <unk>, <s>, </s>, the 256 byte tokens it needs for
 * byte fallback (and for its newline token), then word pieces to fill the size. Scores rank the pieces.
 */
function vocabulary(nVocab: number): { tokens: string[]; types: number[]; scores: number[] } {
  const tokens = ["<unk>", "<s>", "</s>"];
  const types = [UNKNOWN, CONTROL, CONTROL];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
    types.push(BYTE);
  }
  const printable = Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i)).filter((c) => c !== " ");
  const pieces = [...printable, ...printable.map((c) => `\u2581${c}`)];
  for (let i = 0; tokens.length < nVocab; i++) {
    tokens.push(i < pieces.length ? pieces[i] : `\u2581w${(i - pieces.length).toString(36)}`);
    types.push(NORMAL);
  }
  return { tokens, types, scores: tokens.map((_, i) => -i) };
}

/** The GGUF bytes of the calibration model. Deterministic. */
export function buildCalibrationModel(shape: CalibrationModelShape = CALIBRATION_MODEL, seed = 7): Buffer {
  const { nEmbd, nLayer, nHead, nFf, nVocab } = shape;
  const vocab = vocabulary(nVocab);
  const kv = new Map<string, Value>([
    ["general.architecture", str("llama")],
    ["general.name", str(`rbee-calibration-v${CALIBRATION_MODEL_VERSION}`)],
    ["general.file_type", u32(7)], // mostly q8_0
    ["general.alignment", u32(32)],
    ["llama.context_length", u32(shape.contextLength)],
    ["llama.embedding_length", u32(nEmbd)],
    ["llama.block_count", u32(nLayer)],
    ["llama.feed_forward_length", u32(nFf)],
    ["llama.attention.head_count", u32(nHead)],
    ["llama.attention.head_count_kv", u32(nHead)],
    ["llama.attention.layer_norm_rms_epsilon", f32(1e-5)],
    ["llama.rope.freq_base", f32(10000)],
    ["llama.rope.dimension_count", u32(nEmbd / nHead)],
    ["llama.vocab_size", u32(nVocab)],
    ["tokenizer.ggml.model", str("llama")],
    ["tokenizer.ggml.tokens", { type: ValueType.ARRAY, itemType: ValueType.STRING, value: vocab.tokens }],
    ["tokenizer.ggml.scores", { type: ValueType.ARRAY, itemType: ValueType.FLOAT32, value: vocab.scores }],
    ["tokenizer.ggml.token_type", { type: ValueType.ARRAY, itemType: ValueType.INT32, value: vocab.types }],
    ["tokenizer.ggml.unknown_token_id", u32(CALIBRATION_TOKENS.unk)],
    ["tokenizer.ggml.bos_token_id", u32(CALIBRATION_TOKENS.bos)],
    ["tokenizer.ggml.eos_token_id", u32(CALIBRATION_TOKENS.eos)],
    ["tokenizer.ggml.add_bos_token", { type: ValueType.BOOL, value: true }],
  ]);

  const tensors = randomLlamaTensors(
    {
      nVocab,
      nEmbd,
      nEmbdKv: nEmbd,
      nFf,
      nLayer,
      weightType: TensorType.Q8_0,
      isSpecial: (t) => vocab.types[t] === CONTROL || vocab.types[t] === UNKNOWN,
    },
    seed,
  );
  return writeGguf(kv, tensors);
}

/** The calibration model in `dir`, made on first use (atomically: a half-written file is never seen). */
export function ensureCalibrationModel(dir: string): string {
  const file = path.join(dir, `calibration-model-v${CALIBRATION_MODEL_VERSION}.gguf`);
  if (existsSync(file)) return file;
  mkdirSync(dir, { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, buildCalibrationModel());
  renameSync(tmp, file);
  return file;
}
