#!/usr/bin/env bash
# Builds the peer controllers of the side-by-side benchmark (Flagger and Argo Rollouts) from
# the Go module proxy, once, into a cache outside the repository keyed by their versions.
# A second run finds them and builds nothing. Not part of `make setup`: nothing in
# `make test` needs them.
#
#   hack/build-peers.sh                    build what is missing, print the bin directory
#   hack/build-peers.sh flagger-crds       print the path of Flagger's crd.yaml
#   hack/build-peers.sh argo-rollouts-crds print the directory of Argo Rollouts' CRDs
#   TIDEGATE_CACHE=/path ...                use another cache root (default ~/.cache/tidegate)
set -euo pipefail

# v1.36.1 is the only Flagger version the proxy serves.
FLAGGER_VERSION="${FLAGGER_VERSION:-v1.36.1}"
# v1.10.2 is the newest the proxy serves, but its go.mod says go 1.26.10 and the local
# toolchain is 1.26.8 (GOTOOLCHAIN=local): v1.10.1 (go 1.26.1) is the newest it can build.
ARGO_ROLLOUTS_VERSION="${ARGO_ROLLOUTS_VERSION:-v1.10.1}"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
cache_root="${TIDEGATE_CACHE:-$HOME/.cache/tidegate}"
bin="$cache_root/peers-flagger-$FLAGGER_VERSION-argo-rollouts-$ARGO_ROLLOUTS_VERSION/bin"
log() { echo "build-peers: $*" >&2; }

# Downloads a module and prints its directory in GOMODCACHE. Errors (such as a go line
# newer than the local toolchain) go to stderr.
module_dir() {
    go mod download "$1@$2" || return
    echo "$(go env GOMODCACHE)/$1@$2"
}

# Builds main packages of a module whose go.mod has replace directives, which
# `go install mod@version` refuses. A wrapper module requires it and repeats its replaces:
# those to other published versions as they are, those to local paths pointed at the
# sibling module's own published version (as build_wrapped in build-binaries.sh does).
#   build_replaced MODULE VERSION LDFLAGS PACKAGE...
build_replaced() {
    local module=$1 version=$2 ldflags=$3; shift 3
    local work="$cache_root/src/${module//\//_}-$version"
    mkdir -p "$work"
    (
        cd "$work" && rm -f go.mod
        go mod download "$module@$version"
        local upstream_mod
        upstream_mod="$(go env GOMODCACHE)/cache/download/$module/@v/$version.mod"
        {
            echo "module tidegate.local/build"
            grep -E '^(go|godebug) ' "$upstream_mod"
            echo "require $module $version"
            echo "replace ("
            # Single-line `replace a => b v` and the lines of `replace ( ... )` blocks.
            awk '/^replace \($/ {inblock=1; next} inblock && /^\)/ {inblock=0; next}
                 inblock || /^replace / {sub(/^replace /, ""); print}' "$upstream_mod" \
                | sed -E 's#^\s*(\S+)( \S+)? => \.\.?/.*#\1 => \1 '"$version"'#; s#^\s*#\t#'
            echo ")"
        } > go.mod
        echo 'package build' > keep.go  # lets the go command resolve the module graph here
        go build -trimpath -ldflags "$ldflags" -o "$bin/" "$@"
    )
}

# Flagger's go.mod has no replaces: a plain `go install` works.
build_flagger() {
    [[ -x "$bin/flagger" ]] && return
    log "building flagger $FLAGGER_VERSION"
    mkdir -p "$bin"
    GOBIN="$bin" go install -trimpath -ldflags "-s -w" \
        "github.com/fluxcd/flagger/cmd/flagger@$FLAGGER_VERSION"
}

build_argo_rollouts() {
    [[ -x "$bin/rollouts-controller" ]] && return
    log "building rollouts-controller $ARGO_ROLLOUTS_VERSION"
    mkdir -p "$bin"
    local pkg=github.com/argoproj/argo-rollouts/utils/version
    build_replaced github.com/argoproj/argo-rollouts "$ARGO_ROLLOUTS_VERSION" \
        "-s -w -X $pkg.version=${ARGO_ROLLOUTS_VERSION#v} -X $pkg.buildDate=1970-01-01T00:00:00Z" \
        github.com/argoproj/argo-rollouts/cmd/rollouts-controller
}

case "${1:-all}" in
    all) build_flagger; build_argo_rollouts ;;
    flagger) build_flagger ;;
    argo-rollouts) build_argo_rollouts ;;
    # CRDs from the modules, fetched when needed, never committed.
    flagger-crds)
        dir="$(module_dir github.com/fluxcd/flagger "$FLAGGER_VERSION")"
        echo "$dir/artifacts/flagger/crd.yaml"
        exit 0 ;;
    argo-rollouts-crds)
        dir="$(module_dir github.com/argoproj/argo-rollouts "$ARGO_ROLLOUTS_VERSION")"
        echo "$dir/manifests/crds"
        exit 0 ;;
    *) echo "usage: $0 [all|flagger|argo-rollouts|flagger-crds|argo-rollouts-crds]" >&2; exit 2 ;;
esac
echo "$bin"
