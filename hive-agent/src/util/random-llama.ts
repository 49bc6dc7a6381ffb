// Seeded random weights for a llama-architecture GGUF: the hive's calibration model
// (calibration/model.ts) and the test and benchmark models (test/fixtures/models.ts) are made by
// this one generator, so both behave the same way under llama.cpp.
//
// Every embedding carries a constant feature (dimension 0) that the output rows of special tokens
// weigh strongly negative, and the layers' weights are small enough that this feature dominates the
// residual stream: such a model never produces an end-of-generation (or any special) token, so a
// generation always runs to the length asked for.

import { encodeF32, encodeQ8_0, TensorType, type Tensor } from "./gguf";

/** mulberry32: a tiny seeded PRNG; same seed, same stream, on every platform. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface RandomLlamaShape {
  nVocab: number;
  nEmbd: number;
  /** Key/value width (nEmbd / heads × kv heads); nEmbd without grouped-query attention. */
  nEmbdKv: number;
  nFf: number;
  nLayer: number;
  weightType: TensorType.Q8_0 | TensorType.F32;
  /** Tokens the model must never produce (control, unknown, user-defined…). */
  isSpecial: (token: number) => boolean;
}

/** The model's tensors, in llama.cpp's names and order. Deterministic for a shape and seed. */
export function randomLlamaTensors(shape: RandomLlamaShape, seed: number): Tensor[] {
  const { nVocab, nEmbd, nEmbdKv, nFf, nLayer, weightType } = shape;
  const rand = prng(seed);
  const uniform = (n: number, scale: number) => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = (rand() * 2 - 1) * scale;
    return a;
  };
  const matrix = (name: string, ne0: number, ne1: number, values: Float32Array): Tensor => ({
    name,
    dims: [ne0, ne1],
    type: weightType,
    data: weightType === TensorType.Q8_0 ? encodeQ8_0(values) : encodeF32(values),
  });
  const norm = (name: string, n: number): Tensor => ({
    name,
    dims: [n],
    type: TensorType.F32,
    data: encodeF32(new Float32Array(n).fill(1)),
  });
  // Small layer weights keep the residual stream dominated by the constant feature at dimension 0.
  const layerScale = 0.5 / Math.sqrt(nEmbd);

  const embd = uniform(nEmbd * nVocab, 0.1);
  for (let t = 0; t < nVocab; t++) embd[t * nEmbd] = 1; // the constant feature
  const out = uniform(nEmbd * nVocab, 0.5);
  for (let t = 0; t < nVocab; t++) out[t * nEmbd] = shape.isSpecial(t) ? -30 : 0;

  const tensors: Tensor[] = [
    matrix("token_embd.weight", nEmbd, nVocab, embd),
    norm("output_norm.weight", nEmbd),
    matrix("output.weight", nEmbd, nVocab, out),
  ];
  for (let l = 0; l < nLayer; l++) {
    const b = `blk.${l}`;
    tensors.push(
      norm(`${b}.attn_norm.weight`, nEmbd),
      matrix(`${b}.attn_q.weight`, nEmbd, nEmbd, uniform(nEmbd * nEmbd, layerScale)),
      matrix(`${b}.attn_k.weight`, nEmbd, nEmbdKv, uniform(nEmbd * nEmbdKv, layerScale)),
      matrix(`${b}.attn_v.weight`, nEmbd, nEmbdKv, uniform(nEmbd * nEmbdKv, layerScale)),
      matrix(`${b}.attn_output.weight`, nEmbd, nEmbd, uniform(nEmbd * nEmbd, layerScale)),
      norm(`${b}.ffn_norm.weight`, nEmbd),
      matrix(`${b}.ffn_gate.weight`, nEmbd, nFf, uniform(nEmbd * nFf, layerScale)),
      matrix(`${b}.ffn_up.weight`, nEmbd, nFf, uniform(nEmbd * nFf, layerScale)),
      matrix(`${b}.ffn_down.weight`, nFf, nEmbd, uniform(nFf * nEmbd, 0.5 / Math.sqrt(nFf))),
    );
  }
  return tensors;
}
