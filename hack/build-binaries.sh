#!/usr/bin/env bash
# Builds the local control plane's binaries from the Go module proxy, once, into a
# cache outside the repository keyed by version. A second run finds them and builds nothing.
#
#   hack/build-binaries.sh            build what is missing, print the bin directory
#   TIDEGATE_CACHE=/path ...           use another cache root (default ~/.cache/tidegate)
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.35.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.5}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
GATEWAY_API_VERSION="${GATEWAY_API_VERSION:-v1.4.1}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
cache_root="${TIDEGATE_CACHE:-$HOME/.cache/tidegate}"
bin="$cache_root/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION/bin"
mkdir -p "$bin"
log() { echo "build-binaries: $*" >&2; }

# Builds main packages of a module whose go.mod replaces its sibling modules with local
# paths, which `go install mod@version` refuses. A wrapper module requires it and points
# each of those siblings at its own published version instead.
#   build_wrapped MODULE VERSION SIBLING_VERSION LDFLAGS PACKAGE...
build_wrapped() {
    local module=$1 version=$2 sibling_version=$3 ldflags=$4; shift 4
    local work="$cache_root/src/${module//\//_}-$version"
    mkdir -p "$work"
    (
        cd "$work" && rm -f go.mod
        go mod download -json "$module@$version" >/dev/null
        local upstream_mod
        upstream_mod="$(go env GOMODCACHE)/cache/download/$module/@v/$version.mod"
        {
            echo "module tidegate.local/build"
            grep -E '^(go|godebug) ' "$upstream_mod"
            echo "require $module $version"
            echo "replace ("
            grep -v FORBIDDEN_DEPENDENCY "$upstream_mod" \
                | sed -nE 's#^\s*(replace\s+)?(\S+) => \.\.?/.*#\t\2 => \2 '"$sibling_version"'#p'
            echo ")"
        } > go.mod
        echo 'package build' > keep.go  # lets the go command resolve the module graph here
        go build -trimpath -ldflags "$ldflags" -o "$bin/" "$@"
    )
}

build_kubernetes() {
    local want=(kube-apiserver kube-controller-manager kube-scheduler kubectl) pkgs=() b
    for b in "${want[@]}"; do [[ -x "$bin/$b" ]] || pkgs+=("k8s.io/kubernetes/cmd/$b"); done
    [[ ${#pkgs[@]} -eq 0 ]] && return
    log "building ${pkgs[*]##*/} $K8S_VERSION (a cold build takes a long while)"
    local minor pkg=k8s.io/component-base/version ldflags
    minor="$(cut -d. -f2 <<<"$K8S_VERSION")"
    ldflags="-s -w -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
    # Staging modules are published on their own as v0.<minor>.<patch>.
    build_wrapped k8s.io/kubernetes "$K8S_VERSION" "v0.${K8S_VERSION#v1.}" "$ldflags" "${pkgs[@]}"
}

build_etcd() {
    [[ -x "$bin/etcd" ]] && return
    log "building etcd $ETCD_VERSION"
    build_wrapped go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "$ETCD_VERSION" "-s -w" go.etcd.io/etcd/server/v3
    mv "$bin/server" "$bin/etcd"
}

build_kwok() {
    [[ -x "$bin/kwok" && -s "$bin/kwok-stages.yaml" ]] && return
    log "building kwok $KWOK_VERSION"
    GOBIN="$bin" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
    # kwok's own "fast" stage set: nodes become Ready and keep a lease, pods become Ready.
    local stages
    stages="$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage"
    for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
        pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
        echo "---"
        cat "$stages/$f"
    done > "$bin/kwok-stages.yaml.tmp"
    mv "$bin/kwok-stages.yaml.tmp" "$bin/kwok-stages.yaml"
}

# Helm for the chart's lint and install tests; it has no local replaces, so a plain
# `go install` works. Kept in its own versioned directory: it is not part of the cluster.
build_helm() {
    local helm_bin="$cache_root/helm-$HELM_VERSION/bin"
    if [[ ! -x "$helm_bin/helm" ]]; then
        log "building helm $HELM_VERSION"
        mkdir -p "$helm_bin"
        GOBIN="$helm_bin" go install -trimpath \
            -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
            "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    fi
    echo "$helm_bin/helm"
}

case "${1:-all}" in
    all) build_etcd; build_kwok; build_kubernetes ;;
    etcd) build_etcd ;;
    kwok) build_kwok ;;
    kubernetes) build_kubernetes ;;
    helm) build_helm; exit 0 ;;
    gateway-api-crds)
        # Standard-channel CRDs from the module, fetched at test time, never committed.
        go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" >/dev/null
        echo "$(go env GOMODCACHE)/sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION/config/crd/standard"
        exit 0 ;;
    *) echo "usage: $0 [all|etcd|kwok|kubernetes|helm|gateway-api-crds]" >&2; exit 2 ;;
esac
echo "$bin"
