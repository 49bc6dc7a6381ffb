// Build step: the pinned runtime set shipped in the bundle (dist/runtime-pins.json). node-llama-cpp's
// production closure and every @node-llama-cpp/* prebuilt come from package-lock.json (their
// versions and integrity hashes are what `npm ci` verified here); the Node.js runtime packages come
// from extension/runtime-node.json. The keeper downloads exactly these tarballs and nothing else.

const LLAMA = "node-llama-cpp";
const PREBUILT_SCOPE = "@node-llama-cpp/";

/** The package name of a lock path: node_modules/a/node_modules/@s/b → @s/b. */
function nameOf(lockPath) {
  return lockPath.slice(lockPath.lastIndexOf("node_modules/") + "node_modules/".length);
}

/** Where require() finds `name` from the package at lockPath, in the lock's tree. */
function resolveIn(packages, fromPath, name) {
  let base = fromPath;
  for (;;) {
    const key = `${base ? base + "/" : ""}node_modules/${name}`;
    if (packages[key]) return key;
    if (!base) return undefined;
    const i = base.lastIndexOf("/node_modules/");
    base = i < 0 ? "" : base.slice(0, i);
  }
}

/**
 * @param {any} lock package-lock.json (lockfileVersion 2 or 3)
 * @param {any} nodePins extension/runtime-node.json
 */
export function generateRuntimePins(lock, nodePins) {
  const packages = lock.packages ?? {};
  const root = `node_modules/${LLAMA}`;
  if (!packages[root]) throw new Error(`${LLAMA} is not in package-lock.json`);
  const pin = (lockPath) => {
    const p = packages[lockPath];
    if (!p.integrity) throw new Error(`package-lock.json has no integrity for ${lockPath}`);
    return { path: lockPath, name: nameOf(lockPath), version: p.version, integrity: p.integrity };
  };
  // Required dependencies only: optional ones (platform addons, the prebuilts) are chosen per node.
  const seen = new Set();
  const stack = [root];
  while (stack.length) {
    const key = stack.pop();
    if (seen.has(key)) continue;
    seen.add(key);
    for (const dep of Object.keys(packages[key].dependencies ?? {})) {
      const found = resolveIn(packages, key, dep);
      if (!found) throw new Error(`package-lock.json lacks ${dep} (needed by ${key})`);
      stack.push(found);
    }
  }
  const prebuilts = {};
  for (const dep of Object.keys(packages[root].optionalDependencies ?? {})) {
    if (!dep.startsWith(PREBUILT_SCOPE)) continue;
    const key = resolveIn(packages, root, dep);
    if (key) prebuilts[dep] = pin(key);
  }
  const node = {};
  for (const [platform, p] of Object.entries(nodePins.packages))
    node[platform] = { path: "node", name: p.name, version: nodePins.version, integrity: p.integrity };
  return {
    llamaVersion: packages[root].version,
    closure: [...seen].sort().map(pin),
    prebuilts,
    node: { version: nodePins.version, minGlibc: nodePins.minGlibc, packages: node },
  };
}
