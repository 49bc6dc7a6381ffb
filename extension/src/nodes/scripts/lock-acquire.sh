# lock-acquire.sh OWNER STALE_MINUTES
# Takes the node's deploy lock (mkdir is atomic everywhere; flock is not on macOS), waiting up to
# 10 minutes; a lock whose owner file was not touched for STALE_MINUTES is a crashed deploy's and is broken.
L="$R/deploy.lock"
mkdir -p "$R"
i=0
while ! mkdir "$L" 2>/dev/null; do
  S=$(find "$L/owner" -mmin +"$2" 2>/dev/null)
  [ -f "$L/owner" ] || S=$(find "$L" -maxdepth 0 -mmin +"$2" 2>/dev/null)
  if [ -n "$S" ]; then rm -rf "$L"; echo "broke=stale"; continue; fi
  [ $i -eq 0 ] && echo waiting
  i=$((i+1)); [ $i -gt 3000 ] && exit 5
  sleep 0.2
done
echo "$1" > "$L/owner"
