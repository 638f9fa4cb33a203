# The operator image: `tidegate run` (and `tidegate loadtester`). From the repository root:
#   docker build -t tidegate:dev .        (or `make image`, with buildah or docker)
#
# Its base is Debian's, with Debian's python3. Where no registry can be reached,
# hack/base-image.sh makes a local image of the same name from Debian's packages. To build on
# exactly one base, pass its digest: --build-arg BASE=debian:bookworm-slim@sha256:<digest>
# (`make image` prints the digest of the base it used). The Python packages are the ones
# requirements.lock pins, checked by hash.
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/tidegate
COPY requirements.lock /src/
# Behind a TLS-inspecting proxy, the build may be handed its CA bundle (hack/image.sh mounts
# the host's and names it here); it never lands in the image.
ARG PIP_CA_BUNDLE=
RUN /opt/tidegate/bin/pip install --no-cache-dir --disable-pip-version-check \
        ${PIP_CA_BUNDLE:+--cert "$PIP_CA_BUNDLE"} \
        --require-hashes --only-binary=:all: -r /src/requirements.lock
# pyproject.toml names README.md as the long description, so the build needs it.
COPY pyproject.toml README.md /src/
COPY operator /src/operator
# The wheel is built with the locked setuptools; then the build tools leave the venv.
RUN /opt/tidegate/bin/pip install --no-cache-dir --disable-pip-version-check \
        --no-deps --no-build-isolation /src \
    && /opt/tidegate/bin/pip uninstall --yes --disable-pip-version-check setuptools pip \
    && find /opt/tidegate -name __pycache__ -prune -exec rm -rf {} +

FROM ${BASE} AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /usr/share/tidegate \
    && dpkg-query -W -f '${Package} ${Version}\n' > /usr/share/tidegate/debian-packages.txt
COPY --from=build /opt/tidegate /opt/tidegate
# What the operator does not need goes: the package manager, and every shell (the last
# command here runs in the shell it removes, which is fine: it is already running).
RUN /opt/tidegate/bin/python -m pip --version 2>/dev/null && exit 1; \
    rm -rf /var/lib/dpkg /var/cache/apt /var/log/* /usr/share/doc /usr/share/man \
        /usr/share/info /usr/share/locale /usr/bin/apt* /usr/bin/dpkg* /usr/lib/apt \
    && rm -f /usr/bin/bash /usr/bin/dash /usr/bin/sh /usr/bin/rbash

FROM scratch
COPY --from=runtime / /
ENV PATH=/opt/tidegate/bin:/usr/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A numeric user, so that `runAsNonRoot: true` can be checked by the kubelet.
USER 10001:10001
WORKDIR /tmp

# /healthz and /readyz
EXPOSE 8080
ENTRYPOINT ["tidegate"]
CMD ["run", "-A"]
