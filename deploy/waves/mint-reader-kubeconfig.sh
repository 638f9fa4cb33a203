#!/usr/bin/env bash
# Mint a read-only kubeconfig for tidegate's waves (docs/waves.md): a token of the
# tidegate-wave-reader ServiceAccount (deploy/waves, applied in --namespace first) from the
# TokenRequest API, with the cluster's server address and CA. Prints the kubeconfig, or,
# with --secret, writes it into a Secret of another cluster (the one whose tidegate reads
# this one), under --key.
#
#   # region a's rollouts, for region b's tidegate:
#   deploy/waves/mint-reader-kubeconfig.sh --context a --namespace shop --cluster-name a \
#       --secret a-reader --into-context b
#
# The token expires after --duration (the API server may shorten it: see its
# --service-account-max-token-expiration); run this again before it does, e.g. from a
# scheduled job. It is never on a command line: only in the kubeconfig and the Secret.
# $KUBECTL names the kubectl to use (default: kubectl on PATH).
set -euo pipefail

usage() {
	cat <<'EOF'
usage: mint-reader-kubeconfig.sh --namespace NS [options]

the cluster read (whose rollouts the other region waits for):
  --kubeconfig FILE       its kubeconfig (default: $KUBECONFIG or ~/.kube/config)
  --context NAME          its context (default: the current one)
  -n, --namespace NS      the namespace of its rollouts and of the reader account (required)
  --service-account NAME  default: tidegate-wave-reader
  --duration DURATION     the token's lifetime (default: 24h)
  --server URL            its API server as the reading cluster reaches it
                          (default: the server of the kubeconfig)
  --cluster-name NAME     the cluster's name in the kubeconfig (default: the context's cluster)

where the kubeconfig goes (default: printed on stdout):
  --secret NAME           a Secret of this name in the reading cluster
  --key KEY               the Secret's key (default: kubeconfig)
  --into-kubeconfig FILE  the reading cluster's kubeconfig (default: as for kubectl)
  --into-context NAME     the reading cluster's context (default: the current one)
  --into-namespace NS     the Secret's namespace (default: --namespace)
EOF
}

die() {
	echo "mint-reader-kubeconfig.sh: $*" >&2
	exit 2
}

kubectl=${KUBECTL:-kubectl}
source_args=() into_args=()
namespace="" account=tidegate-wave-reader duration=24h server="" name=""
secret="" key=kubeconfig into_namespace=""
while [[ $# -gt 0 ]]; do
	[[ $1 == -h || $1 == --help ]] && { usage; exit 0; }
	[[ $# -ge 2 ]] || die "$1 needs a value"
	case $1 in
	--kubeconfig | --context) source_args+=("$1" "$2") ;;
	-n | --namespace) namespace=$2 ;;
	--service-account) account=$2 ;;
	--duration) duration=$2 ;;
	--server) server=$2 ;;
	--cluster-name) name=$2 ;;
	--secret) secret=$2 ;;
	--key) key=$2 ;;
	--into-kubeconfig) into_args+=(--kubeconfig "$2") ;;
	--into-context) into_args+=(--context "$2") ;;
	--into-namespace) into_namespace=$2 ;;
	*) usage >&2; die "unknown option $1" ;;
	esac
	shift 2
done
[[ -n $namespace ]] || { usage >&2; die "--namespace is required"; }

# `"${a[@]}"` of an empty array is an error under `set -u` in older bash: expand with a guard.
source_kubectl() { "$kubectl" ${source_args[@]+"${source_args[@]}"} "$@"; }
into_kubectl() { "$kubectl" ${into_args[@]+"${into_args[@]}"} "$@"; }

# The cluster as the context names it; --flatten puts a CA file's content inline.
view() { source_kubectl config view --minify --flatten -o "jsonpath=$1"; }
[[ -n $server ]] || server=$(view '{.clusters[0].cluster.server}')
[[ -n $name ]] || name=$(view '{.contexts[0].context.cluster}')
ca=$(view '{.clusters[0].cluster.certificate-authority-data}')
[[ -n $server ]] || die "no server in the kubeconfig's context; give --server"
[[ -n $ca ]] || die "the kubeconfig's cluster has no CA; a reader must verify the server"

token=$(source_kubectl create token "$account" --namespace "$namespace" --duration "$duration")

user="$account@$name"
kubeconfig=$(
	cat <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: "$name"
    cluster:
      server: "$server"
      certificate-authority-data: "$ca"
users:
  - name: "$user"
    user:
      token: "$token"
contexts:
  - name: "$name"
    context:
      cluster: "$name"
      user: "$user"
      namespace: "$namespace"
current-context: "$name"
EOF
)

if [[ -z $secret ]]; then
	printf '%s\n' "$kubeconfig"
	exit 0
fi
# Through stdin, not --from-literal, so that the token is on no command line.
printf '%s\n' "$kubeconfig" |
	into_kubectl create secret generic "$secret" --namespace "${into_namespace:-$namespace}" \
		--from-file="$key=/dev/stdin" --dry-run=client -o yaml |
	into_kubectl apply -f -
