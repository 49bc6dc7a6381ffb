# agent-tmp.sh TMP
# A fresh temp folder for the agent's files; temp folders older than a day (crashed deploys) go.
find "$A" "$R/runtime" -maxdepth 1 -name '.tmp-*' -mtime +1 -exec rm -rf {} + 2>/dev/null
mkdir -p "$1"
