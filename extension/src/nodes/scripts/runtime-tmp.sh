# runtime-tmp.sh TMP
# An empty temp folder for a runtime set, with .tarballs/ for the uploads.
rm -rf "$1"
mkdir -p "$1/.tarballs"
