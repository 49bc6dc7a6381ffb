# runtime-intact.sh RUNTIME_DIR
# Says "intact" when the runtime set is complete and every file still has its recorded hash.
[ -f "$1/.complete" ] && verify "$1" && echo intact
