import type { RuntimePins } from "../src/nodes/runtime-packages";
export function generateRuntimePins(lock: unknown, nodePins: unknown): RuntimePins;
