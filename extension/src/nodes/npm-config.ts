// The npm settings of the keeper's machine that matter for fetching tarballs: which registry serves
// a package (`registry`, `@scope:registry`), its credentials (`//host/path/:_authToken`, `:_auth`,
// `:username` + `:_password`), the proxy (`https-proxy`, `proxy`, `noproxy`) and TLS (`strict-ssl`,
// `cafile`). Read like npm does: the global npmrc, then the user's (~/.npmrc or
// $NPM_CONFIG_USERCONFIG), then npm_config_* environment variables, each overriding the one before.
// A project .npmrc does not apply: the keeper fetches for no project.

import { readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";

export const DEFAULT_REGISTRY = "https://registry.npmjs.org/";

export interface NpmConfigSources {
  env?: NodeJS.ProcessEnv;
  homeDir?: string;
}

/** ini as npm writes it: `key = value`, `;` and `#` comments, ${VAR} expanded from the environment. */
export function parseNpmrc(text: string, env: NodeJS.ProcessEnv): Map<string, string> {
  const out = new Map<string, string>();
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith(";") || line.startsWith("#") || line.startsWith("[")) continue;
    const eq = line.indexOf("=");
    if (eq <= 0) continue;
    const key = expand(line.slice(0, eq).trim(), env);
    let value = line.slice(eq + 1).trim();
    if (/^"(.*)"$/.test(value) || /^'(.*)'$/.test(value)) value = value.slice(1, -1);
    out.set(key, expand(value, env));
  }
  return out;
}

function expand(s: string, env: NodeJS.ProcessEnv): string {
  return s.replace(/(\\*)\$\{([^}]+)\}/g, (whole, slashes: string, name: string) => {
    if (slashes.length % 2) return whole.slice(1); // \${X} stays literal, as in npm
    const v = env[name.replace(/\?$/, "")];
    return slashes + (v ?? (name.endsWith("?") ? "" : whole));
  });
}

function readIfExists(file: string): string | undefined {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
}

/** The merged settings (later sources win). */
export function loadNpmConfig(src: NpmConfigSources = {}): NpmConfig {
  const env = src.env ?? process.env;
  const lower = new Map(Object.entries(env).map(([k, v]) => [k.toLowerCase(), v]));
  const home = src.homeDir ?? os.homedir();
  const settings = new Map<string, string>();
  const merge = (m: Map<string, string>) => m.forEach((v, k) => settings.set(k, v));
  const prefix = lower.get("npm_config_prefix") ?? lower.get("prefix");
  const globalFile = lower.get("npm_config_globalconfig") ?? (prefix ? path.join(prefix, "etc", "npmrc") : undefined);
  if (globalFile) {
    const t = readIfExists(globalFile);
    if (t !== undefined) merge(parseNpmrc(t, env));
  }
  const userFile = lower.get("npm_config_userconfig") ?? path.join(home, ".npmrc");
  const t = readIfExists(userFile);
  if (t !== undefined) merge(parseNpmrc(t, env));
  for (const [k, v] of lower) {
    if (!k.startsWith("npm_config_") || v === undefined) continue;
    // npm_config_https_proxy → https-proxy; keys with a // (credentials) cannot come from the environment.
    settings.set(k.slice("npm_config_".length).replace(/_/g, "-"), v);
  }
  return new NpmConfig(settings, env);
}

export interface RegistryRequest {
  url: string;
  headers: Record<string, string>;
  /** http(s)://… of the proxy to use, if any. */
  proxy?: string;
  strictSsl: boolean;
  ca?: string;
}

export class NpmConfig {
  constructor(
    private readonly settings: Map<string, string>,
    private readonly env: NodeJS.ProcessEnv,
  ) {}

  get(key: string): string | undefined {
    return this.settings.get(key);
  }

  /** The registry that serves a package (its scope's registry, else the default), ending in /. */
  registryFor(name: string): string {
    const scope = name.startsWith("@") ? name.slice(0, name.indexOf("/")) : undefined;
    const r = (scope && this.settings.get(`${scope}:registry`)) || this.settings.get("registry") || DEFAULT_REGISTRY;
    return r.endsWith("/") ? r : r + "/";
  }

  /** The tarball URL of name@version on its registry (the layout every npm registry serves). */
  tarballUrl(name: string, version: string): string {
    const base = name.startsWith("@") ? name.slice(name.indexOf("/") + 1) : name;
    return `${this.registryFor(name)}${name}/-/${base}-${version}.tgz`;
  }

  /**
   * The Authorization header for a URL: the credentials whose "nerf-darted" registry key
   * (//host[:port]/path/) is the longest prefix of the URL, as npm matches them. Never sent to
   * another host.
   */
  authorization(url: string): string | undefined {
    const u = new URL(url);
    let dart = `//${u.host}${u.pathname}`;
    for (;;) {
      const prefix = dart.endsWith("/") ? dart : dart.slice(0, dart.lastIndexOf("/") + 1);
      const token = this.settings.get(`${prefix}:_authToken`);
      if (token) return `Bearer ${token}`;
      const auth = this.settings.get(`${prefix}:_auth`);
      if (auth) return `Basic ${auth}`;
      const user = this.settings.get(`${prefix}:username`);
      const pass = this.settings.get(`${prefix}:_password`);
      if (user && pass)
        return `Basic ${Buffer.from(`${user}:${Buffer.from(pass, "base64").toString("utf8")}`).toString("base64")}`;
      if (prefix === `//${u.host}/`) break;
      dart = prefix.slice(0, -1);
    }
    // Legacy top-level credentials belong to the default registry only.
    const reg = new URL(this.registryFor(""));
    if (reg.host === u.host) {
      const token = this.settings.get("_authToken");
      if (token) return `Bearer ${token}`;
      const auth = this.settings.get("_auth");
      if (auth) return `Basic ${auth}`;
    }
    return undefined;
  }

  /** The proxy for a URL: https-proxy / proxy from npm, else HTTPS_PROXY / HTTP_PROXY, unless noproxy matches. */
  proxyFor(url: string): string | undefined {
    const u = new URL(url);
    const noProxy = this.settings.get("noproxy") ?? this.env.NO_PROXY ?? this.env.no_proxy ?? "";
    const host = u.hostname.toLowerCase();
    for (const entry of noProxy.split(/[,\s]+/).filter(Boolean)) {
      const e = entry.toLowerCase().replace(/^\*?\./, "");
      if (e === "*" || host === e || host.endsWith("." + e)) return undefined;
    }
    const https = this.settings.get("https-proxy") ?? this.env.HTTPS_PROXY ?? this.env.https_proxy;
    const http = this.settings.get("proxy") ?? this.env.HTTP_PROXY ?? this.env.http_proxy;
    return (u.protocol === "https:" ? https || http : http) || undefined;
  }

  /** Everything needed to GET a tarball of name@version. */
  request(name: string, version: string): RegistryRequest {
    const url = this.tarballUrl(name, version);
    const headers: Record<string, string> = {
      "user-agent": "rbee (npm registry client)",
      accept: "application/octet-stream",
    };
    const auth = this.authorization(url);
    if (auth) headers.authorization = auth;
    const cafile = this.settings.get("cafile");
    return {
      url,
      headers,
      proxy: this.proxyFor(url),
      strictSsl: this.settings.get("strict-ssl") !== "false",
      ca: this.settings.get("ca") ?? (cafile ? readIfExists(cafile) : undefined),
    };
  }
}
