# runtime-unpack.sh TMP RUNTIME_ID < LIST
# Checks the uploaded tarballs against their pinned sha512, unpacks each where LIST (lines of
# "destination<TAB>tarball" on stdin) puts it, and moves the finished set into place. Each tarball's
# single top folder (package/, or another name in a few old packages) is stripped.
set -e
cd "$1"
(cd .tarballs && $S512 -c --status SHA512SUMS) || { echo "the uploaded runtime tarballs do not match their pinned hashes" >&2; exit 3; }
X=; tar --version 2>/dev/null | grep -q GNU && X="--no-same-owner --no-same-permissions"
TAB=$(printf '\t')
while IFS="$TAB" read -r dest file; do
  mkdir -p "$dest"
  # shellcheck disable=SC2086 # X is empty or two flags
  tar $X -xzf ".tarballs/$file" -C "$dest" --strip-components=1
done
rm -rf .tarballs node/include node/share node/lib/node_modules node/CHANGELOG.md node/README.md
finish_runtime "$1" "$2"
