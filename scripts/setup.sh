#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine for scopeline and run the demo on real input.
#   - system packages: MariaDB server (scopeline's private database), PostgreSQL (tests), venv
#   - a virtual environment in .venv with scopeline and its test extras
#   - `scopeline demo`: starts the private database, ingests the real CA1 recording from
#     ../shared/data (when present) and a simulated Miniscope V4 session, and lists them
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if command -v apt-get >/dev/null 2>&1; then
  echo "== system packages (mariadb-server, postgresql, python3-venv, chromium for the view's browser test)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mariadb-server postgresql python3-venv chromium chromium-driver >/dev/null
else
  echo "apt-get not found: install a MariaDB or MySQL server (mariadbd/mysqld) yourself" >&2
fi

echo "== Python environment (.venv)"
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"

echo "== demo"
.venv/bin/scopeline demo
