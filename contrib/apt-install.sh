#!/bin/sh
# Install the Debian packages named as arguments, only those not installed yet, so a second
# run does no apt work. Used by the Makefile and .ci/run on a fresh machine.
# Another apt (unattended-upgrades on a new machine, a package manager window) may hold
# the dpkg or apt lists lock: wait for it, up to 10 minutes, instead of failing at once.
# apt-get install waits by itself with DPkg::Lock::Timeout; apt-get update (apt 2.6)
# ignores that option and fails at once, hence the retry loop.
set -eu
missing=""
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
WAIT=600
echo "installing system packages:$missing"

# Runs apt-get with its arguments; while it fails because another apt holds a lock, waits
# and runs it again, until WAIT seconds have passed.
apt_get() {
    deadline=$(( $(date +%s) + WAIT )); said=""
    while :; do
        if out=$($SUDO apt-get -o DPkg::Lock::Timeout=$WAIT "$@" 2>&1); then
            return 0
        fi
        if printf '%s' "$out" | grep -q 'Could not get lock' && [ "$(date +%s)" -lt "$deadline" ]; then
            [ -n "$said" ] || echo "waiting for another apt to finish (up to ${WAIT}s)"
            said=1; sleep 5; continue
        fi
        printf '%s\n' "$out" >&2
        return 1
    done
}
apt_get update -qq
# shellcheck disable=SC2086  # one word per package
apt_get install -y -qq --no-install-recommends $missing
