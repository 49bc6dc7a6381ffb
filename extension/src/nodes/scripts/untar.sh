# untar.sh DIR < TAR.GZ
# Unpacks the gzipped tar on stdin into DIR (created).
mkdir -p "$1" && exec tar -C "$1" -xzf -
