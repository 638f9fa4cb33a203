# The operator image: `tidegate run` (and `tidegate loadtester`). From the repository root:
#   docker build -t tidegate:dev .        (or `make image`, with buildah or docker)
#
# Its base is Debian's, with Debian's python3, pinned by digest: the digest below is the one
# Docker Hub published for debian:bookworm-slim (its multi-platform index) and that many public
# projects pin; this project's build machines reach no registry, so it has not been pulled
# here. Move it forward as the tag moves, for Debian's security updates.
# Where no registry can be reached, hack/base-image.sh makes a local image of the same name
# from Debian's packages and `make image` builds on it: --build-arg BASE=debian:bookworm-slim,
# whose digest it prints. The Python packages are the ones requirements.lock pins, checked by
# hash.
ARG BASE=debian:bookworm-slim@sha256:96e378d7e6531ac9a15ad505478fcc2e69f371b10f5cdf87857c4b8188404716

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
# The kubernetes client ships an asyncio copy of itself (kubernetes.aio, 40 MiB, more than a
# third of the image); tidegate never imports it.
RUN rm -rf /opt/tidegate/lib/python3*/site-packages/kubernetes/aio

FROM ${BASE} AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /usr/share/tidegate \
    && dpkg-query -W -f '${Package} ${Version}\n' > /usr/share/tidegate/debian-packages.txt
COPY --from=build /opt/tidegate /opt/tidegate
# What the operator does not need goes: the package manager, Perl (Essential in Debian, for
# dpkg's scripts), glibc's iconv modules (Python has its own codecs), and every shell (the last
# command here runs in the shell it removes, which is fine: it is already running).
RUN /opt/tidegate/bin/python -m pip --version 2>/dev/null && exit 1; \
    rm -rf /var/lib/dpkg /var/cache/apt /var/log/* /usr/share/doc /usr/share/man \
        /usr/share/info /usr/share/locale /usr/bin/apt* /usr/bin/dpkg* /usr/lib/apt \
        /usr/bin/perl* /usr/lib/*-linux-gnu/perl-base /usr/lib/*-linux-gnu/gconv \
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
