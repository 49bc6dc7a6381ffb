// Settings that choose where code, prompts or credentials go: a node, a model to fetch, the SSH
// config whose hosts (and StrictHostKeyChecking) rbee trusts. They are "scope": "machine" in
// package.json and listed in its untrusted-workspace restrictedConfigurations, and settings.ts reads
// them from the user's settings only, so a cloned repository's .vscode/settings.json cannot set them.

export const MACHINE_SETTINGS = [
  "completion.node",
  "completion.model",
  "infer.node",
  "infer.model",
  "chat.node",
  "chat.model",
  "nodes.sshConfigPath",
] as const;
