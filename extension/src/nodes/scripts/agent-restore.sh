# agent-restore.sh BACKUP AGENT_DIR
# Puts the previous files of a version back after its replacement failed to start.
set -e
[ -d "$1" ]
rm -rf "$2"
mv "$1" "$2"
