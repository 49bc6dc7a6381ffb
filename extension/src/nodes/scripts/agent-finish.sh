# agent-finish.sh TMP RUNTIME_ID COMPLETE
# Checks the uploaded agent files against their hashes, links the runtime, and marks TMP complete.
set -e
cd "$1"
$S256 -c --status .manifest || { echo "the uploaded agent files do not match their hashes" >&2; exit 3; }
ln -s "../../runtime/$2/node_modules" node_modules
printf '%s' "$3" > .complete
