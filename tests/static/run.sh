#!/bin/sh
# run.sh - static analysis over the tree, as ./setup.sh test runs it:
#   cppcheck (warning + portability) over every file in compile_commands.json,
#   clang-tidy (the short check list in .clang-tidy, each check justified there)
#   over the product code (common/ dataplane/ writer/ control/ tools/).
# Every finding must be fixed or listed in allowlist.txt with the reason;
# anything else fails the run. Usage: tests/static/run.sh BUILD_DIR
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build}
cc="$build/compile_commands.json"
[ -f "$cc" ] || { echo "static: $cc missing (meson setup first)"; exit 1; }
out=$(mktemp -d "${TMPDIR:-/tmp}/static.XXXXXX")
trap 'rm -rf "$out"' EXIT INT TERM

if command -v cppcheck >/dev/null; then
	cppcheck --project="$cc" --enable=warning,portability --inline-suppr --quiet -j2 \
		--suppress='*:/usr/*' -i "$build" \
		--template='cppcheck {id} {file}:{line}: {message}' 2> "$out/cppcheck" || true
	echo "static: cppcheck $(cppcheck --version | cut -d' ' -f2): $(wc -l < "$out/cppcheck") findings"
else
	echo "static: cppcheck not installed"; : > "$out/cppcheck"
fi
if command -v run-clang-tidy >/dev/null; then
	files=$(python3 - "$cc" "$root" <<'PY'
import json, os, sys
root = sys.argv[2]
seen = set()
for e in json.load(open(sys.argv[1])):
    f = os.path.normpath(os.path.join(e["directory"], e["file"]))
    rel = os.path.relpath(f, root)
    if rel.split(os.sep)[0] in ("common", "dataplane", "writer", "control", "tools"):
        seen.add(f)
print("\n".join(sorted(seen)))
PY
)
	# shellcheck disable=SC2086
	run-clang-tidy -p "$build" -quiet -j 2 $files 2>/dev/null \
		| sed 's/\x1b\[[0-9;]*m//g' \
		| sed -n 's/^\([^ :]*\):\([0-9]*\):[0-9]*: warning: \(.*\) \[\([a-z0-9.,-]*\)\]$/clang-tidy \4 \1:\2: \3/p' \
		> "$out/tidy" || true
	echo "static: clang-tidy: $(wc -l < "$out/tidy") findings"
else
	echo "static: clang-tidy not installed"; : > "$out/tidy"
fi
cat "$out/cppcheck" "$out/tidy" | python3 "$root/tests/static/allow.py" "$root" "$root/tests/static/allowlist.txt" "$build"
