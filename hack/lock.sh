#!/usr/bin/env bash
# Write requirements.lock: every package the operator image installs (and its build backend),
# pinned with its hashes
# (the Dockerfile installs it with pip --require-hashes), resolved for Python 3.11 on any
# platform. Its first line holds the digest of pyproject.toml's [project] dependencies, so
# that `make lock-check` (part of `make lint`) refuses a dependency change whose lock was
# not written again. Resolving needs PyPI; uv comes from PyPI into ~/.cache/tidegate.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=${XDG_CACHE_HOME:-$HOME/.cache}/tidegate/uv-venv
if [[ ! -x $tools/bin/uv ]]; then
	python3 -m venv "$tools"
	"$tools/bin/pip" install --quiet "uv==0.13.9"
fi
digest=$(python3 hack/lock_digest.py)
# The build backend too (pyproject.toml's build-system.requires): the image builds the
# operator's wheel with no download that the lock does not pin (and removes it afterwards).
build=$(mktemp --suffix=.in)
trap 'rm -f "$build"' EXIT
python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))' > "$build"
body=$("$tools/bin/uv" pip compile pyproject.toml "$build" --quiet --universal --generate-hashes \
	--python-version 3.11 --no-header | sed "s|$build|build-system.requires|")
{
	echo "# pyproject-dependencies-sha256: $digest"
	echo "# Written by hack/lock.sh from pyproject.toml; do not edit by hand."
	echo "$body"
} > requirements.lock
echo "requirements.lock: $(grep -c '==' requirements.lock) packages pinned"
