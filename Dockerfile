# The operator image: `tidegate run`. Build from the repository root:
#   docker build -t ghcr.io/tidegate/tidegate:0.1.0 .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# pyproject.toml names README.md as the long description, so the build needs it.
COPY pyproject.toml README.md /src/
COPY operator /src/operator
RUN pip install /src && rm -rf /src

# A numeric user, so that `runAsNonRoot: true` can be checked by the kubelet.
RUN groupadd --system --gid 10001 tidegate \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin tidegate
USER 10001:10001
WORKDIR /tmp

# /healthz and /readyz
EXPOSE 8080
ENTRYPOINT ["tidegate"]
CMD ["run", "-A"]
