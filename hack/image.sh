#!/usr/bin/env bash
# Build the operator image (`make image`): buildah where it is (installed from Debian's
# packages when it can be, with podman and mmdebstrap, as `make setup` installs Prometheus),
# else docker. The base comes from hack/base-image.sh when no registry has it. Prints the
# base's digest, the image's size, and writes its package list (the Debian packages and
# the Python distributions it holds) to build/image-sbom.txt.
#   hack/image.sh [IMAGE]          (default: tidegate:dev)
# Exits 2 when there is nothing to build with and nothing could be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
image=${1:-tidegate:dev}
base=${BASE:-debian:bookworm-slim}

have() { command -v "$1" >/dev/null 2>&1; }
docker_works() { have docker && docker info >/dev/null 2>&1; }
if ! have buildah || ! have podman || ! have mmdebstrap; then
	if ! docker_works && [[ $(id -u) -eq 0 ]] && have apt-get; then
		echo "image.sh: installing buildah, podman and mmdebstrap from Debian's packages" >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			buildah podman mmdebstrap runc uidmap fuse-overlayfs slirp4netns >&2 \
			|| { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				--no-install-recommends buildah podman mmdebstrap runc uidmap fuse-overlayfs \
				slirp4netns >&2; } \
			|| echo "image.sh: the install failed" >&2
	fi
fi

mkdir -p build
if have buildah && have podman; then
	hack/base-image.sh "$base" >&2
	echo "base $base: $(podman image inspect --format '{{.Digest}}' "$base")"
	# A host behind a TLS-inspecting proxy: its CA bundle, for pip in the build only.
	ca=()
	if [[ -n ${PIP_CERT:-} && -f ${PIP_CERT:-} ]]; then
		ca=(--volume "$PIP_CERT:/run/host-ca.crt:ro" --build-arg PIP_CA_BUNDLE=/run/host-ca.crt)
	fi
	buildah build --runtime runc --quiet --pull=never --layers --build-arg "BASE=$base" "${ca[@]}" \
		--ulimit nofile=16384:16384 --ulimit nproc=4096:4096 -t "$image" . >/dev/null
	run=(podman --runtime runc run --rm --pull never --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
	size=$(podman image inspect --format '{{.Size}}' "$image")
elif docker_works; then
	docker build --build-arg "BASE=$base" -t "$image" . >/dev/null
	run=(docker run --rm)
	size=$(docker image inspect --format '{{.Size}}' "$image")
else
	echo "image.sh: neither buildah and podman nor docker, and none could be installed" >&2
	exit 2
fi

# The SBOM: what dpkg had installed (written at build time: dpkg itself is gone), then the
# Python distributions, read by the image's own interpreter (pip is gone too).
{
	echo "# $image: Debian packages (some files of these are removed after install: the Dockerfile says which)"
	"${run[@]}" --entrypoint /opt/tidegate/bin/python "$image" -c \
		'print(open("/usr/share/tidegate/debian-packages.txt").read(), end="")'
	echo "# $image: Python distributions"
	"${run[@]}" --entrypoint /opt/tidegate/bin/python "$image" -c \
		'import importlib.metadata as m; print("\n".join(sorted(f"{d.name} {d.version}" for d in m.distributions())))'
} > build/image-sbom.txt
echo "image $image: $((size / 1024 / 1024)) MiB; $(grep -vc '^#' build/image-sbom.txt) packages in build/image-sbom.txt"
