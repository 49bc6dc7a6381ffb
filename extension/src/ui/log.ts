// The "rbee" LogOutputChannel: the keeper's narration, runtime installs, errors. Every line passes
// through redactSecrets, so a token that slips into an error message does not reach the log.

import * as vscode from "vscode";
import { eventLogLine, redactSecrets } from "../ui-core/narration";
import type { KeeperEvent } from "../keeper/keeper";
import type { Logger } from "../ui-core/services";

export class RbeeLog implements Logger, vscode.Disposable {
  readonly channel: vscode.LogOutputChannel;

  constructor() {
    this.channel = vscode.window.createOutputChannel("rbee", { log: true });
  }

  trace(message: string) {
    this.channel.trace(redactSecrets(message));
  }
  info(message: string) {
    this.channel.info(redactSecrets(message));
  }
  warn(message: string) {
    this.channel.warn(redactSecrets(message));
  }
  error(message: string) {
    this.channel.error(redactSecrets(message));
  }

  /** One keeper event, when it is worth a line. */
  event(e: KeeperEvent, context = "") {
    const line = eventLogLine(e);
    if (line) this.info(context ? `${context} ${line}` : line);
  }

  show() {
    this.channel.show(true);
  }

  dispose() {
    this.channel.dispose();
  }
}

/** The message shown to the user for an error: its text plus the protocol code when there is one. */
export function describeError(e: unknown): string {
  const err = e as { message?: string; code?: string };
  const message = redactSecrets(err?.message ?? String(e));
  return err?.code && !message.includes(err.code) ? `${message} [${err.code}]` : message;
}

/** An error notification with a button to the log (one per failed action, never per refresh). */
export async function showError(log: RbeeLog, what: string, e: unknown): Promise<void> {
  const text = `${what}: ${describeError(e)}`;
  log.error(text);
  const choice = await vscode.window.showErrorMessage(`rbee: ${text}`, "Show Log");
  if (choice === "Show Log") log.show();
}
