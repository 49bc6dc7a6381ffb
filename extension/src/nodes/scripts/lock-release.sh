# lock-release.sh OWNER
# Removes OWNER's temp folders (another deployer's are its own business) and the lock, if still OWNER's.
L="$R/deploy.lock"
rm -rf "$A/.tmp-$1" "$A/.old-$1" "$R/runtime/.tmp-$1"
if [ "$(cat "$L/owner" 2>/dev/null)" = "$1" ]; then rm -rf "$L"; fi
