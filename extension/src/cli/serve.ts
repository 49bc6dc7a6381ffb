// `rbee serve`: the gateway in the foreground, on the CLI's keeper (same registry, nodes and flow as
// `rbee infer`). Logs one line per request to stderr; Ctrl+C stops it (workers keep running).

import { isIP } from "node:net";
import { LOCALHOST } from "../keeper/local-connector";
import type { KeeperStack } from "../stack/keeper-stack";
import {
  DEFAULT_GATEWAY_HOST,
  DEFAULT_GATEWAY_PORT,
  defaultGatewayConfigPath,
  loadGatewayConfig,
} from "../gateway/config";
import { Gateway } from "../gateway/server";
import { gatewayTokenPath, loadGatewayToken } from "../gateway/token";

export const SERVE_HELP = `usage: rbee serve [--host 127.0.0.1] [--port ${DEFAULT_GATEWAY_PORT}] [--config FILE]
       rbee serve --show-token

  An OpenAI-, Ollama- and llama.cpp-compatible endpoint for every tool, served by your nodes' workers.
  --host ADDR      address to listen on (default ${DEFAULT_GATEWAY_HOST}; anything else exposes the gateway)
  --port N         port (default ${DEFAULT_GATEWAY_PORT}; 0 picks a free one)
  --config FILE    aliases, queue limits, worker options (default ${defaultGatewayConfigPath()})
  --show-token     print the bearer token clients must send (kept in ${gatewayTokenPath()}) and exit
`;

export type ServeContext = Pick<KeeperStack, "keeper" | "nodes" | "listSshNodes" | "close">;

export interface ServeValues {
  host?: string;
  port?: string;
  config?: string;
  "show-token"?: boolean;
}

export async function serve(
  v: ServeValues,
  open: () => Promise<ServeContext>,
  usage: (message: string) => Error,
): Promise<number> {
  if (v["show-token"]) {
    process.stdout.write(loadGatewayToken() + "\n");
    return 0;
  }
  const port = v.port === undefined ? DEFAULT_GATEWAY_PORT : Number(v.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw usage(`--port must be an integer between 0 and 65535, got "${v.port}"`);
  const host = v.host ?? DEFAULT_GATEWAY_HOST;
  if (!isIP(host) && host !== "localhost") throw usage(`--host must be an IP address, got "${host}"`);
  const configFile = v.config ?? defaultGatewayConfigPath();
  loadGatewayConfig(configFile); // a broken settings file stops the start, with its reason
  const token = loadGatewayToken();
  const ctx = await open();
  let sshHosts: Set<string> | undefined;
  const isNode = (name: string) => {
    if (name === LOCALHOST) return true;
    try {
      sshHosts ??= new Set(ctx.listSshNodes().map((n) => n.alias));
    } catch {
      sshHosts = new Set();
    }
    return sshHosts.has(name);
  };
  // The file is re-read when it changes, so aliases and limits apply without a restart.
  let config = loadGatewayConfig(configFile);
  let configAt = Date.now();
  const currentConfig = () => {
    if (Date.now() - configAt > 2000) {
      configAt = Date.now();
      try {
        config = loadGatewayConfig(configFile);
      } catch (e) {
        process.stderr.write(`rbee serve: keeping the previous settings: ${(e as Error).message}\n`);
      }
    }
    return config;
  };
  const gateway = new Gateway({
    keeper: ctx.keeper,
    nodes: ctx.nodes,
    config: currentConfig,
    token,
    isNode,
    log: (line) => process.stderr.write(line + "\n"),
  });
  let address;
  try {
    address = await gateway.listen(port, host);
  } catch (e) {
    await ctx.close();
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "EADDRINUSE") throw usage(`port ${port} on ${host} is in use; pick another with --port`);
    throw e;
  }
  if (!/^(127\.|::1$|localhost$)/.test(host))
    process.stderr.write(
      `rbee serve: warning: ${host} is not a loopback address; the token travels in clear text over plain HTTP\n`,
    );
  process.stderr.write(
    `rbee gateway listening on ${address.url} (OpenAI: ${address.url}/v1, Ollama: ${address.url}, llama.cpp: ${address.url}); token: rbee serve --show-token\n`,
  );
  await new Promise<void>((resolve) => {
    process.once("SIGINT", resolve);
    process.once("SIGTERM", resolve);
  });
  await gateway.close();
  await ctx.close();
  return 0;
}
