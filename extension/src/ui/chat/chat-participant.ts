// @rbee in VS Code's own chat view, where that API exists: the same generation as the Chat panel
// (ChatService, the worker's /v1/chat), with VS Code's chat history as the conversation.

import * as vscode from "vscode";
import type { ChatMessage } from "@rbee/hive-agent/protocol";
import { describeError } from "../log";
import { progressStep } from "../../ui-core/narration";
import type { ChatService } from "../../ui-core/chat/chat-service";
import { contextMessages, type ChatTurn } from "../../ui-core/chat/chat-controller";

export const PARTICIPANT_ID = "rbee.participant";

/** VS Code's history of this participant's conversation as chat turns. */
function historyTurns(context: vscode.ChatContext): ChatTurn[] {
  const turns: ChatTurn[] = [];
  for (const h of context.history) {
    if (h instanceof vscode.ChatRequestTurn) turns.push({ role: "user", content: h.prompt, status: "done" });
    else if (h instanceof vscode.ChatResponseTurn) {
      const text = h.response.map((p) => (p instanceof vscode.ChatResponseMarkdownPart ? p.value.value : "")).join("");
      turns.push({ role: "assistant", content: text, status: "done" });
    }
  }
  return turns;
}

/** Registers @rbee when VS Code has the chat participant API; undefined otherwise. */
export function registerChatParticipant(
  extensionUri: vscode.Uri,
  service: ChatService,
  currentModel: () => Promise<string>,
  systemPrompt: () => string,
): vscode.Disposable | undefined {
  if (typeof vscode.chat?.createChatParticipant !== "function") return undefined;
  const participant = vscode.chat.createChatParticipant(PARTICIPANT_ID, async (request, context, stream, token) => {
    const model = await currentModel();
    if (!model) {
      stream.markdown("No chat model yet: start a worker in the **Remote Nodes** view, or set `rbee.chat.model`.");
      return {};
    }
    const messages: ChatMessage[] = contextMessages(
      historyTurns(context),
      request.prompt,
      undefined,
      systemPrompt() || undefined,
    );
    const abort = new AbortController();
    token.onCancellationRequested(() => abort.abort());
    try {
      await service.generateNarrated(
        model,
        messages,
        (t) => stream.markdown(t),
        abort.signal,
        (e) => {
          const step = progressStep(e);
          if (step) stream.progress(step.message);
        },
      );
      return {};
    } catch (e) {
      if (abort.signal.aborted) return {};
      return { errorDetails: { message: describeError(e) } };
    }
  });
  participant.iconPath = vscode.Uri.joinPath(extensionUri, "extension", "media", "rbee.svg");
  return participant;
}
