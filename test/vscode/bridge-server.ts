// The harness side of the bridge (see bridge-protocol.ts): an HTTP server on a Unix socket that
// performs what the in-host test asks for on the workbench page with playwright.
import http from "node:http";
import { chmodSync, mkdirSync, rmSync } from "node:fs";
import path from "node:path";
import type { Locator, Page } from "playwright-core";
import {
  ACTION_NAMES,
  ActionName,
  BridgeActions,
  BridgeErrorCode,
  BridgeRequest,
  BridgeResponse,
  EXTENSION_ID,
  SCREENSHOT_NAME,
  Target,
} from "./bridge-protocol";

export interface BridgeServerOptions {
  socketPath: string;
  /** Resolves to the workbench page; the bridge may be called before the page is attached. */
  page: () => Promise<Page>;
  /** Folder that screenshots are written to. */
  screenshotDir: string;
  /** Called with one line per action, for the run's log. */
  log?: (line: string) => void;
}

export interface BridgeServer {
  /** Absolute paths of the screenshots taken so far, in order. */
  readonly screenshots: string[];
  close(): Promise<void>;
}

const DEFAULT_TIMEOUT_MS = 10_000;
const MAX_TIMEOUT_MS = 120_000;
const MAX_BODY_BYTES = 64 * 1024;

class BridgeError extends Error {
  constructor(
    readonly code: BridgeErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export async function startBridgeServer(options: BridgeServerOptions): Promise<BridgeServer> {
  const screenshots: string[] = [];
  // One action at a time: two concurrent key sequences would interleave in the editor.
  let queue: Promise<unknown> = Promise.resolve();

  const perform = async (request: BridgeRequest): Promise<unknown> => {
    const page = await options.page();
    switch (request.action) {
      case "press":
        await page.keyboard.press(request.args.key);
        return null;
      case "type":
        await page.keyboard.type(request.args.text);
        return null;
      case "screenshot": {
        mkdirSync(options.screenshotDir, { recursive: true });
        const file = path.join(options.screenshotDir, `${request.args.name}.png`);
        await page.screenshot({ path: file, type: "png" });
        screenshots.push(file);
        return { path: file } satisfies BridgeActions["screenshot"]["result"];
      }
      case "click":
        await locate(page, request.args).filter({ visible: true }).first().click({ timeout: DEFAULT_TIMEOUT_MS });
        return null;
      case "waitFor":
        await locate(page, request.args)
          .first()
          .waitFor({ state: request.args.state ?? "visible", timeout: request.args.timeoutMs ?? DEFAULT_TIMEOUT_MS });
        return null;
      case "text":
        return await locate(page, request.args).allTextContents();
    }
  };

  const server = http.createServer((req, res) => {
    const reply = (status: number, body: BridgeResponse) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    readBody(req)
      .then((raw) => {
        const request = parseRequest(req.method, req.url, raw);
        options.log?.(`bridge: ${request.action} ${JSON.stringify(request.args)}`);
        const done = queue.then(() => perform(request));
        queue = done.catch(() => undefined);
        return done;
      })
      .then(
        (result) => reply(200, { ok: true, result }),
        (err: unknown) => {
          const code = err instanceof BridgeError ? err.code : "ACTION_FAILED";
          // Playwright's messages carry a call log after the first lines; the head says what failed.
          const message = (err instanceof Error ? err.message : String(err)).split("\n").slice(0, 6).join("\n");
          options.log?.(`bridge: ${code} ${message}`);
          reply(code === "INVALID_REQUEST" ? 400 : 500, { ok: false, error: { code, message } });
        },
      );
  });

  rmSync(options.socketPath, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.socketPath, () => resolve());
  });
  chmodSync(options.socketPath, 0o600);

  return {
    screenshots,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** The elements a selector names, in the workbench or inside one extension's webview content. */
function locate(page: Page, args: { selector: string } & Target): Locator {
  if (args.webview === undefined) return page.locator(args.selector);
  // A webview is two frames deep: VS Code's host iframe (tagged with the extension id in its URL
  // once ready) and, inside it, the frame holding the extension's HTML.
  return page
    .frameLocator(`iframe.webview.ready[src*="extensionId=${args.webview}"]`)
    .first()
    .frameLocator("#active-frame")
    .locator(args.selector);
}

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new BridgeError("INVALID_REQUEST", `request body over ${MAX_BODY_BYTES} bytes`));
        req.destroy();
      } else chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

function parseRequest(method: string | undefined, url: string | undefined, raw: string): BridgeRequest {
  if (method !== "POST" || url !== "/action") {
    throw new BridgeError("INVALID_REQUEST", `expected POST /action, got ${method} ${url}`);
  }
  let body: unknown;
  try {
    body = JSON.parse(raw);
  } catch {
    throw new BridgeError("INVALID_REQUEST", "request body is not JSON");
  }
  const { action, args } = (body ?? {}) as { action?: unknown; args?: unknown };
  if (typeof action !== "string" || !ACTION_NAMES.includes(action as ActionName)) {
    throw new BridgeError(
      "INVALID_REQUEST",
      `unknown action ${JSON.stringify(action)}; known: ${ACTION_NAMES.join(", ")}`,
    );
  }
  if (typeof args !== "object" || args === null) {
    throw new BridgeError("INVALID_REQUEST", `${action}: "args" must be an object`);
  }
  const a = args as Record<string, unknown>;
  const requireString = (key: string) => {
    if (typeof a[key] !== "string" || a[key] === "") {
      throw new BridgeError("INVALID_REQUEST", `${action}: "${key}" must be a non-empty string`);
    }
  };
  switch (action as ActionName) {
    case "press":
      requireString("key");
      break;
    case "type":
      requireString("text");
      break;
    case "screenshot":
      requireString("name");
      if (!SCREENSHOT_NAME.test(a.name as string)) {
        throw new BridgeError(
          "INVALID_REQUEST",
          `screenshot: name must match ${SCREENSHOT_NAME} (it becomes a file name)`,
        );
      }
      break;
    case "click":
    case "waitFor":
    case "text":
      requireString("selector");
      if (a.webview !== undefined && (typeof a.webview !== "string" || !EXTENSION_ID.test(a.webview))) {
        throw new BridgeError("INVALID_REQUEST", `${action}: "webview" must be an extension id like publisher.name`);
      }
      if (action === "waitFor") {
        const states = ["attached", "detached", "visible", "hidden"];
        if (a.state !== undefined && !states.includes(a.state as string)) {
          throw new BridgeError("INVALID_REQUEST", `waitFor: "state" must be one of ${states.join(", ")}`);
        }
        const t = a.timeoutMs;
        if (t !== undefined && (typeof t !== "number" || !(t > 0 && t <= MAX_TIMEOUT_MS))) {
          throw new BridgeError("INVALID_REQUEST", `waitFor: "timeoutMs" must be a number in (0, ${MAX_TIMEOUT_MS}]`);
        }
      }
      break;
  }
  return { action, args } as BridgeRequest;
}
