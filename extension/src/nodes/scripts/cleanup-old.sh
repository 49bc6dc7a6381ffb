# cleanup-old.sh AGENT_DIR RUNTIME_ID
# Removes every other agent version and runtime set, once the new one answers.
for d in "$A"/*; do [ "$d" = "$1" ] || rm -rf "$d"; done
for d in "$R"/runtime/*; do [ "${d##*/}" = "$2" ] || rm -rf "$d"; done
