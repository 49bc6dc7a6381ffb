# hive-token-read.sh
# The hive's token (a secret: the keeper never logs it).
cat "$H/token" 2>/dev/null
