# probe-state.sh VERSION NODE_COMMAND ASK_NODE_VERSION(yes|no)
# What one quick look tells about rbee on the node, as key=value lines (no hardware probing).
# Asking the node's own node for its version costs a process start: only when it is to be used.
D="$A/$1"
echo "root=$R"
N=$(command -v "$2" 2>/dev/null)
echo "node=$N"
if [ "$3" = yes ] && [ -n "$N" ]; then echo "node_version=$("$N" --version 2>/dev/null)"; fi
if [ -f "$D/.complete" ] && [ -f "$D/.manifest" ]; then
  sed 's/^/c_/' "$D/.complete"
  echo "agent_sha=$(sed -n 's/^\([0-9a-f]*\)  hive-agent\.js$/\1/p' "$D/.manifest")"
  RID=$(sed -n 's/^runtime=//p' "$D/.complete")
  if [ -n "$RID" ] && [ -f "$R/runtime/$RID/.complete" ] && verify "$D" && verify "$R/runtime/$RID"; then echo "installed=yes"; fi
fi
for d in "$A"/*; do if [ -f "$d/.complete" ]; then echo "agent_dir=${d##*/}"; fi; done
if [ -f "$H/hive.json" ]; then
  echo "hive_json=$(tr -d '\n' < "$H/hive.json")"
  P=$(sed -n 's/.*"pid": *\([0-9][0-9]*\).*/\1/p' "$H/hive.json")
  if [ -n "$P" ] && ps -p "$P" -o args= 2>/dev/null | grep -q hive-agent; then echo "hive_alive=yes"; fi
fi
if [ -f "$H/token" ]; then echo "token=$(cat "$H/token")"; fi
