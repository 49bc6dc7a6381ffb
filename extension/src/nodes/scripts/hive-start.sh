# hive-start.sh NODE AGENT_DIR TENTHS [DAEMON_ARGS...]
# Starts the hive detached from the SSH session and waits up to TENTHS tenths of a second for its
# hive.json; prints it, or why not with the end of the hive's log. setsid where it exists (not on
# macOS): the hive must outlive this session; nohup covers SIGHUP.
NODE=$1
DIR=$2
TENTHS=$3
shift 3
mkdir -p "$H" && chmod 700 "$H"
cd "$DIR" || exit 1
rm -f "$H/hive.json"
S=; command -v setsid >/dev/null 2>&1 && S=setsid
( exec $S nohup "$NODE" hive-agent.js daemon --token-file "$H/token" --home "$H" "$@" ) >> "$H/hive.log" 2>&1 < /dev/null &
PID=$!
echo "pid=$PID"
i=0
while [ $i -lt "$TENTHS" ]; do
  if [ -f "$H/hive.json" ] && grep -Eq "\"pid\": *${PID}[^0-9]" "$H/hive.json"; then echo "hive_json=$(tr -d '\n' < "$H/hive.json")"; exit 0; fi
  if ! kill -0 $PID 2>/dev/null; then echo "state=exited"; tail -n 30 "$H/hive.log"; exit 3; fi
  sleep 0.1
  i=$((i+1))
done
echo "state=timeout"; tail -n 30 "$H/hive.log"; exit 4
