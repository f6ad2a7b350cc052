#!/usr/bin/env bash
# Builds the previous release of Verdict (the commit in tests/upgrade/previous-release: main before
# issue #14's mixed-version work) from this repository's own history, once, into a cache, and prints
# the path of its `verdict` binary. The upgrade and mixed-version tests run it beside this checkout's
# build. A release build (about 8 minutes on 2 idle cores); later calls find it in the cache.
#
# Usage: scripts/previous-release.sh        (prints the binary's path on stdout; progress on stderr)
# Cache: $VERDICT_PREVIOUS_CACHE, default ~/.cache/verdict/previous/<commit>
set -euo pipefail
cd "$(dirname "$0")/.."
commit=$(tr -d '[:space:]' <tests/upgrade/previous-release)
cache="${VERDICT_PREVIOUS_CACHE:-$HOME/.cache/verdict/previous}/$commit"
bin="$cache/bin/verdict"
if [[ -x "$bin" ]]; then
  echo "$bin"
  exit 0
fi
if ! git cat-file -e "$commit^{commit}" 2>/dev/null; then
  echo "previous-release: commit $commit is not in this clone's history; fetch it (a shallow clone lacks it)" >&2
  exit 1
fi
mkdir -p "$cache"
# The source as it was, without a work tree of this repository (no worktree bookkeeping to clean up).
rm -rf "$cache/src"
mkdir -p "$cache/src"
git archive "$commit" | tar -x -C "$cache/src"
echo "previous-release: building $commit (release) in $cache" >&2
# The commit's own lock file and vendored patches; its own target directory, kept for reruns.
(cd "$cache/src" && VERDICT_GIT_COMMIT="$commit" CARGO_TARGET_DIR="$cache/target" \
  cargo build --release --locked -p verdict >&2)
mkdir -p "$cache/bin"
cp "$cache/target/release/verdict" "$bin.tmp"
mv "$bin.tmp" "$bin"
# The sources and objects are not needed once the binary is kept.
rm -rf "$cache/src" "$cache/target"
echo "$bin"
