#!/usr/bin/env python3
"""Prints the import graph of one crate's modules and the circles in it.

  scripts/module-circles.py crates/engine/src

A module is a top-level file or directory of the crate's `src`. `crate::X` in a
module (outside its `#[cfg(test)]` part) is an edge to module X when X is one, and
to `lib` when X is an item re-exported there. Circles are the strongly connected
components of more than one module (RFC 0009 asks for none in the engine).
"""

import os
import re
import sys


def graph(root):
    uses = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            parts = os.path.relpath(path, root)[:-3].split(os.sep)
            if parts[-1] == "mod":
                parts = parts[:-1]
            module = parts[0]
            src = open(path).read().split("#[cfg(test)]")[0]
            src = re.sub(r"//[^\n]*", "", src)
            names = uses.setdefault(module, set())
            for m in re.finditer(r"crate::(\{[^}]*\}|\w+)", src):
                group = m.group(1)
                if group.startswith("{"):
                    names.update(a or b for a, b in re.findall(r"^\{?\s*(\w+)|,\s*(\w+)", group))
                else:
                    names.add(group)
    modules = set(uses)
    return {m: {(n if n in modules else "lib") for n in ns} - {m} for m, ns in uses.items()}


def circles(g):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
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
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def main():
    g = graph(sys.argv[1] if len(sys.argv) > 1 else "crates/engine/src")
    for m in sorted(g):
        print(f"{m} -> {' '.join(sorted(g[m]))}")
    found = circles(g)
    for c in found:
        print("circle:", " ".join(c))
    if not found:
        print("no circle")


if __name__ == "__main__":
    main()
