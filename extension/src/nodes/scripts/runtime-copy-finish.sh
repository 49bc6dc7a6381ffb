# runtime-copy-finish.sh TMP RUNTIME_ID
# Finishes a runtime copied from the keeper's node_modules (the development path).
set -e
finish_runtime "$1" "$2"
