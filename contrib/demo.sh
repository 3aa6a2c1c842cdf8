#!/usr/bin/env bash
# `make run`: a self-contained demo. Everything lives under $1 (demo/ in the checkout):
# its own config, catalog, cache and vault, so the user's own btfs setup is never touched.
set -euo pipefail
DEMO=$1
BTFS=$2
export BTFS_CONFIG=$DEMO/config/btfs/config.toml
export XDG_DATA_HOME=$DEMO/data XDG_CACHE_HOME=$DEMO/cache
SRC=$DEMO/home/notes
MNT=$DEMO/mnt

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { say "$*"; "$@"; }

fusermount3 -u -z "$MNT" 2>/dev/null || true
rm -rf "$DEMO"
mkdir -p "$SRC/projects" "$SRC/photos" "$MNT"
printf '# Plan\n\n- write the backup tool\n' > "$SRC/plan.md"
printf 'milk\neggs\n' > "$SRC/shopping.txt"
printf 'print("hello")\n' > "$SRC/projects/hello.py"
head -c 3000000 /dev/urandom > "$SRC/photos/holiday.jpg"
ln -s plan.md "$SRC/latest-plan"

run "$BTFS" init --vault "$DEMO/vault" --no-input
run "$BTFS" track "$SRC"
run "$BTFS" backup
sleep 1  # a second backup in another second gets its own by-time name

printf -- '- make it browsable\n' >> "$SRC/plan.md"
rm "$SRC/shopping.txt"
printf 'notes for later\n' > "$SRC/ideas.txt"
run "$BTFS" status
run "$BTFS" backup
run "$BTFS" snapshots
run "$BTFS" log "$SRC/plan.md"
run "$BTFS" check --read-data

if "$BTFS" mount --help >/dev/null 2>&1; then
    run "$BTFS" mount "$MNT"
    run ls "$MNT/by-time"
    run ls "$MNT/by-file$SRC"
    run ls "$MNT/by-file$SRC/plan.md"
    run ls "$MNT/by-file$SRC/shopping.txt"
    first=$(ls "$MNT/by-time" | head -1)
    say "cp $MNT/by-time/$first$SRC/shopping.txt $SRC/   # restore a deleted file"
    cp "$MNT/by-time/$first$SRC/shopping.txt" "$SRC/"
    run cat "$SRC/shopping.txt"
    cat <<MSG

The demo backups are mounted at $MNT. Look around:
    ls $MNT/by-time/latest$SRC
    ls $MNT/by-file$SRC/plan.md
Use the demo's settings to run btfs on it yourself:
    export BTFS_CONFIG=$BTFS_CONFIG XDG_DATA_HOME=$XDG_DATA_HOME XDG_CACHE_HOME=$XDG_CACHE_HOME
    $BTFS snapshots
When done:  $BTFS umount $MNT   (or: make demo-clean)
MSG
else
    run "$BTFS" restore "$SRC/plan.md" --version 1
    run ls "$SRC"
fi
