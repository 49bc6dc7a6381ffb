# Put before every script rbee runs on a node (remote-scripts.ts): the paths rbee uses there, the
# hash tools, and the helpers the deploy scripts share. Everything rbee creates is private (umask 077).
# R: the rbee root (RBEE_HOME moves ~/.rbee, as on the keeper's machine), H: the hive's home, A: the agents.
# Checked as common.sh + each script (shellcheck -s sh), where not every script uses every name or function:
# shellcheck disable=SC2034,SC2317
umask 077
R="${RBEE_HOME:-$HOME/.rbee}"
case "$R" in /*) ;; *) R="$HOME/$R" ;; esac
H="$R/hive"
A="$R/agent"

# S256 / S512: sha256sum and sha512sum (GNU, busybox), or shasum on macOS; same output and -c format.
if command -v sha256sum >/dev/null 2>&1; then S256=sha256sum; S512=sha512sum; else S256="shasum -a 256"; S512="shasum -a 512"; fi

# verify DIR: every file listed in DIR/.manifest still has its sha256. The list is checked in up to
# 4 parallel parts (one per core), so the ~200 MB of a runtime stay within the 1 s of a no-op deploy.
verify() (
  cd "$1" 2>/dev/null && [ -s .manifest ] || exit 1
  P=1; command -v nproc >/dev/null 2>&1 && P=$(nproc 2>/dev/null); [ "$P" -gt 4 ] 2>/dev/null && P=4
  L=$(wc -l < .manifest); [ "$P" -gt "$L" ] && P=$L; [ "$P" -ge 1 ] 2>/dev/null || P=1
  i=0; pids=
  # shellcheck disable=SC2086 # S256 is a command and its flags
  while [ $i -lt "$P" ]; do awk -v p="$P" -v i=$i 'NR % p == i' .manifest | $S256 -c --status - 2>/dev/null & pids="$pids $!"; i=$((i+1)); done
  ok=0; for p in $pids; do wait "$p" || ok=1; done; exit "$ok"
)

# finish_runtime TMP ID: makes the runtime built in TMP private, records the sha256 of every file in
# its .manifest, marks it complete, and moves it into place as runtime/ID (next to TMP).
finish_runtime() {
  cd "$1" || return 1
  chmod -R u+rwX,go-rwx .
  # shellcheck disable=SC2086,SC2094 # S256 is a command and its flags; find skips the .manifest it writes
  find . -type f ! -name .manifest -exec $S256 {} + | sed 's|  \./|  |' > .manifest
  printf '%s\n' "$2" > .complete
  cd .. || return 1
  rm -rf "$2"
  mv "$1" "$2"
}
