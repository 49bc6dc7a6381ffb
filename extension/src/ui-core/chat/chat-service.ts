// The chat's link to the keeper, shared by the webview view and the @rbee participant: generation
// over the worker's /v1/chat (the model's own chat template), and the list of models to offer.

import type { ChatMessage, StopReason } from "@rbee/hive-agent/protocol";
import type { KeeperEvent } from "../../keeper/keeper";
import type { RbeeServices } from "../services";
import type { ChatGenerate } from "./chat-controller";
import { modelChoices } from "../infer/model-choices";

export interface ChatServiceSettings {
  node: string;
  model: string;
  maxTokens: number;
  temperature: number;
}

export class ChatService {
  constructor(
    private readonly services: RbeeServices,
    private readonly settings: () => ChatServiceSettings,
    private readonly onEvent: (e: KeeperEvent) => void,
  ) {}

  /** Streams one reply; a cold start (hive, model load) is narrated through onEvent. */
  readonly generate: ChatGenerate = (model, messages, onToken, signal) =>
    this.generateNarrated(model, messages, onToken, signal, this.onEvent);

  /** generate, with the cold start's narration going to `onEvent` as well. */
  async generateNarrated(
    model: string,
    messages: ChatMessage[],
    onToken: (t: string) => void,
    signal: AbortSignal,
    onEvent: (e: KeeperEvent) => void,
  ): Promise<{ stopReason: StopReason }> {
    const s = this.settings();
    const keeper = await this.services.keeper();
    const result = await keeper.generate(
      { node: s.node, model },
      { kind: "chat", messages, max_tokens: s.maxTokens, temperature: s.temperature },
      {
        onEvent: (e) => {
          if (onEvent !== this.onEvent) this.onEvent(e);
          onEvent(e);
        },
        onToken,
        fitContext: true,
      }, // rbee.chat.maxTokens beyond the worker's context: lowered to what fits
      signal,
    );
    return { stopReason: result.stopReason };
  }

  /** Models to offer: running on the chat node, in its catalog, recently used, configured. */
  async models(recent: readonly string[]): Promise<string[]> {
    const s = this.settings();
    let running: string[] = [];
    let catalog: string[] = [];
    try {
      const { registry } = await this.services.get();
      running = (await registry.listWorkers({ node: s.node }))
        .filter((w) => w.state === "idle" || w.state === "busy")
        .map((w) => w.model_ref);
      catalog = (await registry.listModels(s.node)).map((m) => m.model_ref);
    } catch {
      // no registry yet: recent and configured models still make a list
    }
    return modelChoices({ running, catalog, recent, configured: s.model ? [s.model] : [] }).map((c) => c.ref);
  }
}
