#!/usr/bin/env python3
"""Per-second latency timeline of one loaded oha run and of a light /healthz
probe run at the same time (bench/run.sh's timeline scenario).

Both oha runs were made with --db-url: table `oha`, one row per request, with
`start`, `end` and `duration` in seconds from that oha's own start, and
`status`. The probe started HEALTHZ_OFFSET seconds after the load (wall
clock, measured by run.sh), so its times are shifted by that much to share
one time axis. Requests are put in the second they started in.

Prints one line per second:
  t=12 introspect_n=... introspect_p50_ms=... introspect_p99_ms=...
       introspect_max_ms=... introspect_non2xx=... healthz_n=...
       healthz_p99_ms=... healthz_max_ms=...
then one line naming the worst seconds (by the load's p99) with the probe's
p99 in those same seconds, and how many seconds went over LIMIT_MS for the
load, for the probe, and for both at once: if /healthz (no database, no
crypto) is slow in the same seconds, the whole process or the machine
stalled, not the endpoint.

  bench/timeline.py NAME LOAD_DB HEALTHZ_DB HEALTHZ_OFFSET SECONDS [LIMIT_MS]
"""
import math
import sqlite3
import sys


def rows(path, offset=0.0):
    con = sqlite3.connect(path)
    try:
        return [(s + offset, d * 1000.0, st) for s, d, st in
                con.execute("SELECT start, duration, status FROM oha")]
    finally:
        con.close()


def pct(sorted_ms, p):
    """Nearest-rank percentile of a sorted list (0.0 when empty)."""
    if not sorted_ms:
        return 0.0
    return sorted_ms[max(0, math.ceil(p * len(sorted_ms)) - 1)]


def by_second(reqs, seconds):
    buckets = [[] for _ in range(seconds)]
    bad = [0] * seconds
    for start, ms, status in reqs:
        t = min(max(int(start), 0), seconds - 1)
        buckets[t].append(ms)
        if not 200 <= status < 300:
            bad[t] += 1
    for b in buckets:
        b.sort()
    return buckets, bad


def main():
    if len(sys.argv) < 6:
        sys.exit(__doc__)
    name, load_db, probe_db = sys.argv[1:4]
    offset, seconds = float(sys.argv[4]), int(sys.argv[5])
    limit = float(sys.argv[6]) if len(sys.argv) > 6 else 5.0
    seconds = max(seconds, 1)
    load, load_bad = by_second(rows(load_db), seconds)
    probe, _ = by_second(rows(probe_db, offset), seconds)
    stats = []
    for t in range(seconds):
        lo, pr = load[t], probe[t]
        s = dict(t=t, n=len(lo), p50=pct(lo, 0.50), p99=pct(lo, 0.99),
                 max=lo[-1] if lo else 0.0, bad=load_bad[t], hn=len(pr),
                 hp99=pct(pr, 0.99), hmax=pr[-1] if pr else 0.0)
        stats.append(s)
        print("t=%d %s_n=%d %s_p50_ms=%.2f %s_p99_ms=%.2f %s_max_ms=%.2f %s_non2xx=%d "
              "healthz_n=%d healthz_p99_ms=%.2f healthz_max_ms=%.2f"
              % (t, name, s["n"], name, s["p50"], name, s["p99"], name, s["max"],
                 name, s["bad"], s["hn"], s["hp99"], s["hmax"]))
    worst = sorted(stats, key=lambda s: s["p99"], reverse=True)[:3]
    over = [s for s in stats if s["p99"] > limit]
    probe_over = [s for s in stats if s["hp99"] > limit]
    both = [s for s in over if s["hp99"] > limit]
    # A second with no request finished at all is a stall, whatever p99 says.
    empty = [s["t"] for s in stats if s["n"] == 0]
    print("timeline=%s worst_seconds=%s p99_ms=%s healthz_p99_ms_same_seconds=%s "
          "seconds_p99_over_%gms=%d healthz_seconds_over_%gms=%d both_over=%d "
          "empty_seconds=%s"
          % (name, ",".join(str(s["t"]) for s in worst),
             ",".join("%.2f" % s["p99"] for s in worst),
             ",".join("%.2f" % s["hp99"] for s in worst),
             limit, len(over), limit, len(probe_over), len(both),
             ",".join(map(str, empty)) or "none"))


if __name__ == "__main__":
    main()
