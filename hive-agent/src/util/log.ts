// A small leveled logger for the hive and its workers. Lines go to stderr (the hive's log file when
// deployed). Secrets never reach it: every registered secret is replaced before a line is written.

type Level = "debug" | "info" | "warn" | "error";
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

const secrets = new Set<string>();

/** Registers a value (token, key) that must never appear in a log line. */
export function registerSecret(secret: string) {
  if (secret.length >= 8) secrets.add(secret);
}

export function redact(text: string): string {
  let out = text;
  for (const s of secrets) out = out.split(s).join("[redacted]");
  // Belt and braces: bearer headers that slipped into a message.
  return out.replace(/(Bearer\s+)[A-Za-z0-9._~+/=-]+/gi, "$1[redacted]");
}

let threshold: Level = (process.env.RBEE_LOG_LEVEL as Level) in ORDER ? (process.env.RBEE_LOG_LEVEL as Level) : "info";

export function setLogLevel(level: Level) {
  threshold = level;
}

export interface Logger {
  debug(msg: string): void;
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
}

export function createLogger(component: string): Logger {
  const write = (level: Level, msg: string) => {
    if (ORDER[level] < ORDER[threshold]) return;
    process.stderr.write(
      `${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} [${component}] ${redact(msg)}\n`,
    );
  };
  return {
    debug: (m) => write("debug", m),
    info: (m) => write("info", m),
    warn: (m) => write("warn", m),
    error: (m) => write("error", m),
  };
}
