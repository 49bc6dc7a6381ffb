# uninstall.sh PURGE_MODELS(yes|no)
# Removes the agent, its runtime, token, hive.json, log and sockets (the models too with yes), and
# says whether rbee was there.
found=0
[ -d "$A" ] && found=1
[ -f "$H/token" ] && found=1
rm -rf "$A" "$R/runtime"
rm -f "$H/token" "$H/hive.json" "$H/hive.log" "$H/hive.sock"
rm -rf "$H/workers"
if [ "$1" = yes ]; then rm -rf "$H/models" "$H/catalog.json"; fi
rmdir "$H" 2>/dev/null
rmdir "$R" 2>/dev/null
echo "found=$found"
