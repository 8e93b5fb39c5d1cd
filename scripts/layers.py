#!/usr/bin/env python3
"""Checks the module layers of src/: no module imports one on its own or a
higher layer, and no two modules import each other in a circle.

    domain <- db <- credentials <- oauth, api <- routes <- startup

Run by scripts/test.sh. A new top-level module gets a rank below."""
import collections
import os
import re
import sys

RANK = {
    "tokens": 0,
    "domain": 1, "secrets": 1,
    "db": 2,
    "error": 3, "credentials": 3, "auth": 3, "config": 3, "ratelimit": 3,
    "oauth": 4, "api": 4, "accounts": 4, "http": 4, "tls": 4, "metrics": 4,
    "state": 5, "maintenance": 5, "telemetry": 5,
    "routes": 6,
    "startup": 7,
    "cli": 8,
}
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def module_of(path):
    parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
    if parts[-1] == "mod":
        parts = parts[:-1]
    return "::".join(parts)


def main():
    files = {}
    for d, _, names in os.walk(ROOT):
        for n in names:
            if n.endswith(".rs") and n not in ("main.rs", "lib.rs"):
                files[module_of(os.path.join(d, n))] = os.path.join(d, n)
    edges = collections.defaultdict(set)
    problems = []
    for m, path in files.items():
        src = open(path, encoding="utf-8").read()
        # Unit tests may reach anywhere.
        src = re.sub(r"#\[cfg\(test\)\]\s*mod tests \{.*", "", src, flags=re.S)
        top = m.split("::")[0]
        if top not in RANK:
            problems.append(f"{m}: top-level module '{top}' has no rank in scripts/layers.py")
            continue
        for used in re.findall(r"crate::([a-z_]+(?:::[a-z_]+)*)", src):
            parts = used.split("::")
            target = next(
                ("::".join(parts[:k]) for k in range(len(parts), 0, -1) if "::".join(parts[:k]) in files),
                None,
            )
            if target is None or target == m or m.startswith(target + "::"):
                continue
            edges[m].add(target)
            ttop = target.split("::")[0]
            if ttop != top and RANK.get(ttop, 99) >= RANK[top]:
                problems.append(f"{m} imports {target}: layer {ttop} is not below {top}")
    # Circles between files (Tarjan).
    index, low, stack, on, counter = {}, {}, [], set(), [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                problems.append("import circle: " + " <-> ".join(sorted(comp)))

    sys.setrecursionlimit(10000)
    for v in list(edges):
        if v not in index:
            visit(v)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"layers: {len(files)} modules, no upward import, no circle")


main()
