# runtime-clear.sh TMP
# Removes a runtime temp folder before the development copy fills it.
rm -rf "$1"
