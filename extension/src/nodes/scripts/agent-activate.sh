# agent-activate.sh AGENT_DIR BACKUP TMP
# Swaps the new version in: the folder of the same version (if any) moves to BACKUP, TMP takes its place.
set -e
if [ -e "$1" ]; then mv "$1" "$2"; fi
mv "$3" "$1"
