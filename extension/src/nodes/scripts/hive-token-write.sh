# hive-token-write.sh < TOKEN
# Stores the hive's token (mode 0600). It travels on stdin: a command line would show it in the
# node's process list.
umask 077
mkdir -p "$H"
cat > "$H/token.tmp" && chmod 600 "$H/token.tmp" && mv "$H/token.tmp" "$H/token"
