#!/usr/bin/env bash
# Build the controller image without a container daemon: buildah, chroot isolation, vfs storage.
#   hack/image.sh build [TAG]     the Dockerfile as it is (pulls the base image pinned by digest)
#   hack/image.sh standin [TAG]   the same Dockerfile on a stand-in base built from Debian packages
#                                 (debootstrap bookworm with its python3.11), for a machine that
#                                 reaches Debian and PyPI but no container registry
# Both end by running the image: `version`, the non-root user, `--cloud fake` refused (exit 2).
# Needs root and buildah (apt-get install buildah); standin also debootstrap. `make image` and
# `make image-standin` call this. The release workflow builds the published image with buildx.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${GPU_PROVISIONER_CACHE:-${HOME}/.cache/gpu-provisioner}"
export STORAGE_DRIVER="${STORAGE_DRIVER:-vfs}" BUILDAH_ISOLATION="${BUILDAH_ISOLATION:-chroot}"
STANDIN=localhost/python-standin:3.11-bookworm

log() { printf '[image] %s\n' "$*" >&2; }
command -v buildah >/dev/null || { log "ERROR: buildah is not installed (apt-get install -y buildah)"; exit 1; }

standin_base() {
  command -v debootstrap >/dev/null || { log "ERROR: debootstrap is not installed (apt-get install -y debootstrap)"; exit 1; }
  local rootfs="${CACHE}/image-standin/rootfs"
  if [[ ! -x "${rootfs}/usr/bin/python3" ]]; then
    log "stand-in base: debootstrap bookworm into ${rootfs} (first run only)"
    rm -rf "${rootfs}"
    mkdir -p "$(dirname "${rootfs}")"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      bookworm "${rootfs}" http://deb.debian.org/debian >"${CACHE}/image-standin/debootstrap.log" 2>&1 \
      || { log "ERROR: debootstrap failed; see ${CACHE}/image-standin/debootstrap.log"; exit 1; }
  fi
  # As the official image: `python` on PATH. And the host's CA bundle, so that pip inside the build
  # trusts the same roots as pip on this machine.
  ln -sf /usr/bin/python3 "${rootfs}/usr/local/bin/python"
  cp /etc/ssl/certs/ca-certificates.crt "${rootfs}/etc/ssl/certs/ca-certificates.crt"
  local ctr
  ctr="$(buildah from scratch)"
  buildah copy --quiet "${ctr}" "${rootfs}" / >/dev/null
  buildah config --os linux --arch "$(go env GOARCH 2>/dev/null || echo amd64)" --env LANG=C.UTF-8 \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd python3 "${ctr}"
  buildah commit --quiet --rm "${ctr}" "${STANDIN}" >/dev/null
  log "stand-in base: ${STANDIN}"
}

smoke() {
  local image="$1" ctr out rc=0
  ctr="$(buildah from --quiet "${image}")"
  trap 'buildah rm "${ctr}" >/dev/null' RETURN
  out="$(buildah run "${ctr}" -- gpu-provisioner version)"
  [[ "${out}" == "gpu-provisioner $(cd "${ROOT}" && python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')" ]] \
    || { log "ERROR: version printed '${out}'"; exit 1; }
  [[ "$(buildah run "${ctr}" -- id -u)" == 65532 ]] || { log "ERROR: the image does not run as uid 65532"; exit 1; }
  buildah run "${ctr}" -- gpu-provisioner controller --cloud fake 2>/dev/null || rc=$?
  [[ "${rc}" == 2 ]] || { log "ERROR: --cloud fake exited ${rc}, not 2"; exit 1; }
  log "ok: ${image}: ${out}, uid 65532, --cloud fake refused"
}

mode="${1:-build}"
tag="${2:-localhost/gpu-provisioner:dev}"
args=(bud --isolation "${BUILDAH_ISOLATION}" --layers -t "${tag}" -f "${ROOT}/Dockerfile")
case "${mode}" in
  build) ;;
  standin) standin_base; args+=(--build-arg "PYTHON_IMAGE=${STANDIN}") ;;
  *) log "ERROR: unknown mode '${mode}' (build|standin)"; exit 2 ;;
esac
buildah "${args[@]}" "${ROOT}"
smoke "${tag}"
