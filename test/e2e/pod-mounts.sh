#!/bin/sh
# Runs a command in the mount namespace of a pod: a sequence of mount operations, "--",
# then the command. Run it under `unshare --mount --propagation private`: nothing it
# mounts is seen outside, and pod-mounts.ts only creates files inside tmpfs mounts made
# here, so the host's files are never touched. Values arrive as arguments, never as code.
#   tmpfs DIR | mkdir DIR | touch FILE | bind SRC DST | bind-ro SRC DST
set -eu
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
  case "$1" in
    tmpfs) mount -t tmpfs -o mode=0755 tmpfs "$2"; shift 2 ;;
    mkdir) mkdir -p "$2"; shift 2 ;;
    touch) touch "$2"; shift 2 ;;
    bind) mount --bind "$2" "$3"; shift 3 ;;
    bind-ro) mount -o bind,ro "$2" "$3"; shift 3 ;;
    *) echo "pod-mounts.sh: unknown operation $1" >&2; exit 2 ;;
  esac
done
[ "$#" -gt 1 ] || { echo "pod-mounts.sh: no command after --" >&2; exit 2; }
shift
exec "$@"
