# Sourced by scripts/setup and scripts/preflight: find_python prints the first
# Python 3.11 among $PYTHON, python3.11, python3 and python on PATH, or fails.
# TFF 0.87 supports Python 3.9-3.11; the lock is compiled for 3.11.
find_python() {
  for candidate in "${PYTHON:-}" python3.11 python3 python; do
    [ -n "$candidate" ] || continue
    command -v "$candidate" >/dev/null 2>&1 || continue
    if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  return 1
}
