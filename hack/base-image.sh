#!/usr/bin/env bash
# Make the Dockerfile's base, debian:bookworm-slim, as a local image from Debian's own
# packages (mmdebstrap, minbase variant), for a machine that reaches Debian's mirror but no
# container registry. Nothing is done when an image of that name exists already. Run as root
# (mmdebstrap's root mode); prints the image's digest.
#   hack/base-image.sh [IMAGE]      (default: debian:bookworm-slim)
set -euo pipefail
image=${1:-debian:bookworm-slim}
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
engine=${ENGINE:-podman}

if "$engine" image exists "$image" 2>/dev/null; then
	echo "base image $image exists: $("$engine" image inspect --format '{{.Digest}}' "$image")"
	exit 0
fi
command -v mmdebstrap >/dev/null || { echo "base-image.sh: needs mmdebstrap (apt install mmdebstrap)" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# minbase: essential packages and apt, as the slim images have; no documentation. /usr is
# merged by the hook (directory symlinks, as debootstrap and the official images do) rather
# than by the usrmerge package, which would pull all of Perl into the base.
mmdebstrap --variant=minbase --mode=root \
	--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
	--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
	--dpkgopt='path-exclude=/usr/share/locale/*' \
	--aptopt='Acquire::Retries "3"' \
	"$suite" "$work/rootfs.tar" "deb $mirror $suite main" \
	"deb $mirror $suite-updates main" "deb $mirror-security $suite-security main" >&2
"$engine" import --change 'CMD ["bash"]' "$work/rootfs.tar" "$image" >/dev/null
echo "base image $image made from Debian $suite: $("$engine" image inspect --format '{{.Digest}}' "$image")"
