# hive-stop.sh PID TENTHS
# SIGTERM to the hive (it stops its workers first), then SIGKILL after TENTHS tenths of a second;
# only a process that is a hive-agent is signalled. Says "killed" when it had to.
P=$1
ps -p "$P" -o args= 2>/dev/null | grep -q hive-agent || exit 0
kill -TERM "$P" 2>/dev/null
i=0
while [ $i -lt "$2" ]; do kill -0 "$P" 2>/dev/null || exit 0; sleep 0.1; i=$((i+1)); done
kill -KILL "$P" 2>/dev/null
echo killed
