#!/usr/bin/env python3
"""allow.py - filters static-analysis findings ("TOOL CHECK FILE:LINE: message"
on stdin) through allowlist.txt ("TOOL CHECK PATH  # reason", PATH relative
to the repository; an entry covers every finding of that check in that file).
Prints what is left; exits 1 when anything is left or an entry has no reason."""
import os
import sys

root, allow_path = sys.argv[1], sys.argv[2]
build = sys.argv[3] if len(sys.argv) > 3 else root   # clang-tidy names files relative to it
allowed, bad = set(), []
for n, line in enumerate(open(allow_path), 1):
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    entry, _, why = line.partition("#")
    parts = entry.split()
    if len(parts) != 3 or len(why.strip()) < 10:
        bad.append("allowlist.txt:%d: needs 'TOOL CHECK PATH  # reason'" % n)
        continue
    allowed.add(tuple(parts))
left, used = [], set()
for line in sys.stdin:
    line = line.rstrip("\n")
    if not line.strip():
        continue
    tool, check, rest = (line.split(" ", 2) + ["", ""])[:3]
    path = rest.split(":", 1)[0]
    if os.path.isabs(path):
        full = path
    elif os.path.exists(os.path.join(root, path)):   # cppcheck: relative to the checkout
        full = os.path.join(root, path)
    else:                                            # clang-tidy: relative to the build dir
        full = os.path.join(build, path)
    rel = os.path.relpath(os.path.normpath(full), root)
    key = (tool, check, rel)
    if key in allowed:
        used.add(key)
        continue
    left.append("%s %s %s" % (tool, check, rest.replace(path, rel, 1)))
for x in bad + left:
    print("static: " + x)
print("static: %d findings left, %d allowlisted (%d entries)" % (len(left), len(used), len(allowed)))
sys.exit(1 if left or bad else 0)
