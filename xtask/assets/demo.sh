#!/bin/sh
# enforcer demo: refuse setting the clock and mounting to one cgroup only, and watch it live.
CG=/sys/fs/cgroup/demo

echo "== create cgroup $CG and deny settime and mount there"
mkdir -p "$CG" /mnt/demo
enforcer attach --cgroup "$CG" --deny settime,mount || exit 1

echo "== stream policy events"
enforcer tail &
TAIL=$!
sleep 1

# Runs a command inside the demo cgroup: a fresh shell moves itself ($$ is its own pid) into
# the cgroup, then becomes the command.
in_cgroup() {
    sh -c 'echo $$ > '"$CG"'/cgroup.procs && exec "$@"' sh "$@"
}

# busybox `date -s` reports a refused change on stderr but still exits 0 and prints a date:
# keep its first line, which is either the error or the new time.
echo "== inside $CG: date -s is refused"
in_cgroup date -s "2030-01-01 00:00" 2>&1 | head -n 1
in_cgroup date -s "2031-06-15 12:00" 2>&1 | head -n 1

echo "== inside $CG: mount is refused"
in_cgroup mount -t tmpfs scratch /mnt/demo

echo "== outside $CG: date -s is allowed"
date -s "2030-01-01 00:00" 2>&1 | head -n 1

sleep 1   # let tail print the events
kill "$TAIL"
wait "$TAIL" 2>/dev/null
echo "== done"
