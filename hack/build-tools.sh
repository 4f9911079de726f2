#!/usr/bin/env bash
# Build the local control plane and CLI tools from pinned Go modules:
#   kube-apiserver, kubectl  <- k8s.io/kubernetes (staging modules replaced by their v0.x tags)
#   etcd                     <- go.etcd.io/etcd/server/v3 (the module root is the etcd main package)
#   helm                     <- helm.sh/helm/v3/cmd/helm
#   actionlint               <- github.com/rhysd/actionlint/cmd/actionlint (lints .github/workflows)
# Binaries are cached outside the repository, keyed by version:
#   ${GPU_PROVISIONER_CACHE:-~/.cache/gpu-provisioner}/bin/<version>/<tool>
# Prints the bin directory of each tool; re-running with a warm cache does nothing.
#
# Usage: hack/build-tools.sh [kubernetes|etcd|helm|actionlint ...]   (default: all)
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "${HACK_DIR}/versions.env"

CACHE="${GPU_PROVISIONER_CACHE:-${HOME}/.cache/gpu-provisioner}"
export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0

log() { printf '[build-tools] %s\n' "$*" >&2; }

fail() {
  # $1 = what was being built, $2 = module, $3 = log file
  log "ERROR: building $1 from Go module $2 failed."
  log "command log: $3 (last lines below)"
  tail -n 30 "$3" >&2 || true
  exit 1
}

# run_logged LOGFILE WHAT MODULE CMD...
run_logged() {
  local logfile="$1" what="$2" module="$3"
  shift 3
  log "  \$ $*"
  if ! "$@" >>"${logfile}" 2>&1; then
    fail "${what}" "${module}" "${logfile}"
  fi
}

# prepare_module DIR GO_VERSION : an empty throw-away module used only to resolve and build.
prepare_module() {
  local dir="$1" gover="$2"
  rm -rf "${dir}"
  mkdir -p "${dir}"
  printf 'module local.build/tools\n\ngo %s\n' "${gover}" >"${dir}/go.mod"
}

build_kubernetes() {
  local v="${KUBERNETES_VERSION}" out="${CACHE}/bin/kubernetes-${KUBERNETES_VERSION}"
  if [[ -x "${out}/kube-apiserver" && -x "${out}/kubectl" ]]; then
    echo "${out}"
    return
  fi
  local src="${CACHE}/src/kubernetes-${v}" logfile="${CACHE}/logs/kubernetes-${v}.log"
  mkdir -p "${CACHE}/logs" "${out}"
  : >"${logfile}"
  log "building kube-apiserver and kubectl ${v} (first run only; several minutes on 2 cores)"
  prepare_module "${src}" "1.24.0"
  # k8s.io/kubernetes points its staging modules at ./staging/src/...; a consumer must replace each
  # with the published v0.<minor>.<patch> tag of the same release.
  run_logged "${logfile}" "kube-apiserver" "k8s.io/kubernetes@${v}" \
    go mod download -json "k8s.io/kubernetes@${v}"
  local gomod staging minor
  gomod="$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/${v}.mod"
  staging="v0.${v#v1.}"
  minor="$(cut -d. -f2 <<<"${v}")"
  {
    echo "godebug default=go1.24"
    echo "replace ("
    grep -E '=> \./staging/src/' "${gomod}" | awk -v sv="${staging}" '{print "\t" $1 " => " $1 " " sv}'
    echo ")"
  } >>"${src}/go.mod"
  (
    cd "${src}"
    run_logged "${logfile}" "kube-apiserver" "k8s.io/kubernetes@${v}" \
      go get "k8s.io/kubernetes/cmd/kube-apiserver@${v}" "k8s.io/kubernetes/cmd/kubectl@${v}"
    local ldflags=""
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ldflags+=" -X ${pkg}.gitVersion=${v} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
      ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
    done
    run_logged "${logfile}" "kube-apiserver/kubectl" "k8s.io/kubernetes@${v}" \
      go build -trimpath -ldflags "-s -w ${ldflags}" -o "${out}/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
  )
  echo "${out}"
}

build_etcd() {
  local v="${ETCD_VERSION}" out="${CACHE}/bin/etcd-${ETCD_VERSION}"
  if [[ -x "${out}/etcd" ]]; then
    echo "${out}"
    return
  fi
  local src="${CACHE}/src/etcd-${v}" logfile="${CACHE}/logs/etcd-${v}.log"
  mkdir -p "${CACHE}/logs" "${out}"
  : >"${logfile}"
  log "building etcd ${v}"
  prepare_module "${src}" "1.24.0"
  (
    cd "${src}"
    run_logged "${logfile}" "etcd" "go.etcd.io/etcd/server/v3@${v}" \
      go get "go.etcd.io/etcd/server/v3@${v}"
    run_logged "${logfile}" "etcd" "go.etcd.io/etcd/server/v3@${v}" \
      go build -trimpath -ldflags "-s -w" -o "${out}/etcd" go.etcd.io/etcd/server/v3
  )
  echo "${out}"
}

build_helm() {
  local v="${HELM_VERSION}" out="${CACHE}/bin/helm-${HELM_VERSION}"
  if [[ -x "${out}/helm" ]]; then
    echo "${out}"
    return
  fi
  local src="${CACHE}/src/helm-${v}" logfile="${CACHE}/logs/helm-${v}.log"
  mkdir -p "${CACHE}/logs" "${out}"
  : >"${logfile}"
  log "building helm ${v}"
  prepare_module "${src}" "1.24.0"
  (
    cd "${src}"
    run_logged "${logfile}" "helm" "helm.sh/helm/v3@${v}" go get "helm.sh/helm/v3@${v}"
    run_logged "${logfile}" "helm" "helm.sh/helm/v3@${v}" \
      go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=${v}" \
      -o "${out}/helm" helm.sh/helm/v3/cmd/helm
  )
  echo "${out}"
}

build_actionlint() {
  local v="${ACTIONLINT_VERSION}" out="${CACHE}/bin/actionlint-${ACTIONLINT_VERSION}"
  if [[ -x "${out}/actionlint" ]]; then
    echo "${out}"
    return
  fi
  local src="${CACHE}/src/actionlint-${v}" logfile="${CACHE}/logs/actionlint-${v}.log"
  mkdir -p "${CACHE}/logs" "${out}"
  : >"${logfile}"
  log "building actionlint ${v}"
  prepare_module "${src}" "1.24.0"
  (
    cd "${src}"
    run_logged "${logfile}" "actionlint" "github.com/rhysd/actionlint@${v}" \
      go get "github.com/rhysd/actionlint@${v}"
    run_logged "${logfile}" "actionlint" "github.com/rhysd/actionlint@${v}" \
      go build -trimpath -ldflags "-s -w -X github.com/rhysd/actionlint.version=${v}" \
      -o "${out}/actionlint" github.com/rhysd/actionlint/cmd/actionlint
  )
  echo "${out}"
}

command -v go >/dev/null || { log "ERROR: 'go' is not on PATH; the local control plane is built from Go modules"; exit 1; }

targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=(kubernetes etcd helm actionlint)
for t in "${targets[@]}"; do
  case "$t" in
    kubernetes) build_kubernetes ;;
    etcd) build_etcd ;;
    helm) build_helm ;;
    actionlint) build_actionlint ;;
    *) log "ERROR: unknown tool '$t' (kubernetes|etcd|helm|actionlint)"; exit 2 ;;
  esac
done
