# hive-log.sh LINES FOLLOW(yes|no)
# The hive's log: its last LINES lines, then (FOLLOW) what it appends. Exit 3: there is no log.
[ -f "$H/hive.log" ] || { echo "no hive log at $H/hive.log" >&2; exit 3; }
if [ "$2" = yes ]; then exec tail -n "$1" -f "$H/hive.log"; fi
exec tail -n "$1" "$H/hive.log"
