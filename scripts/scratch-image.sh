#!/usr/bin/env bash
# Builds a Docker image FROM scratch out of executables from this machine and the shared
# libraries they load (found with ldd), without any registry. Used by the local image build
# (docker/build-local.sh) and by the tests that need small images of their own.
#
# usage: scripts/scratch-image.sh TAG EXECUTABLE[=/path/in/image] ... [-- EXTRA_FILE ...]
#                                  [--links /path/in/image=TARGET ...] [--users NAME=UID ...]
#   An EXECUTABLE lands in /usr/local/bin/<name> unless a path in the image is given.
#   EXTRA_FILEs (data files, e.g. /etc/ssl/certs/ca-certificates.crt) are copied at the same path.
#   --links: symbolic links made in the image (e.g. busybox-style command names of one binary).
#   --users: unprivileged users (and their groups, same id) added to /etc/passwd and /etc/group,
#   for programs that refuse to run as root (PostgreSQL); run them with `docker run --user UID`.
# The image also gets /etc/passwd and /etc/group with root (ssh refuses to run without them),
# /tmp, and the labels org.opencontainers.image.{title,version} when XIVO_HA_VERSION is set.
set -euo pipefail

if [ $# -lt 2 ]; then
  sed -n '2,14p' "$0" >&2
  exit 2
fi
tag=$1
shift

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT

copy_with_path() { # copy a file to the same absolute path in the context, following links
  local file=$1
  mkdir -p "$context$(dirname "$file")"
  cp -L "$file" "$context$file"
}

copy_libraries() {
  local executable=$1
  # ldd prints "name => /path (addr)" or "/path (addr)" for the loader; static: "not a dynamic".
  ldd "$executable" 2>/dev/null | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' |
    while read -r lib; do
      [ -e "$lib" ] && copy_with_path "$lib"
    done || true
}

extras=false
links=false
users=false
passwd='root:x:0:0:root:/root:/bin/sh\n'
group='root:x:0:\n'
for item in "$@"; do
  if [ "$item" = "--" ]; then
    extras=true
    links=false
    users=false
    continue
  fi
  if [ "$item" = "--links" ]; then
    links=true
    users=false
    continue
  fi
  if [ "$item" = "--users" ]; then
    users=true
    links=false
    continue
  fi
  if $users; then
    user=${item%%=*}
    uid=${item#*=}
    if [ "$user" = "$item" ] || ! [[ "$uid" =~ ^[1-9][0-9]*$ ]] || ! [[ "$user" =~ ^[a-z_][a-z0-9_-]*$ ]]; then
      echo "scratch-image: --users takes NAME=UID (UID > 0), not $item" >&2
      exit 1
    fi
    passwd+="$user:x:$uid:$uid:$user:/tmp:/bin/sh\n"
    group+="$user:x:$uid:\n"
    continue
  fi
  if $links; then
    link=${item%%=*}
    if [ "$link" = "$item" ] || [ "${link#/}" = "$link" ]; then
      echo "scratch-image: --links takes /path/in/image=TARGET, not $item" >&2
      exit 1
    fi
    mkdir -p "$context$(dirname "$link")"
    ln -sfn "${item#*=}" "$context$link"
    continue
  fi
  if $extras; then
    copy_with_path "$item"
    continue
  fi
  source=${item%%=*}
  target=/usr/local/bin/$(basename "$source")
  [ "$item" != "$source" ] && target=${item#*=}
  if [ ! -x "$source" ]; then
    echo "scratch-image: $source is not an executable file" >&2
    exit 1
  fi
  mkdir -p "$context$(dirname "$target")"
  cp -L "$source" "$context$target"
  copy_libraries "$source"
done

mkdir -p "$context/etc" "$context/tmp"
chmod 1777 "$context/tmp"
printf "$passwd" >"$context/etc/passwd"
printf "$group" >"$context/etc/group"

cat >"$context/Dockerfile" <<DOCKERFILE
FROM scratch
COPY . /
LABEL org.opencontainers.image.title="$tag" org.opencontainers.image.version="${XIVO_HA_VERSION:-dev}"
ENV PATH=/usr/local/bin:/usr/bin:/bin
DOCKERFILE
echo "Dockerfile" >"$context/.dockerignore"
if ! build_log=$(DOCKER_BUILDKIT=0 docker build --quiet -t "$tag" "$context" 2>&1); then
  echo "scratch-image: docker build of $tag failed: $build_log" >&2
  exit 1
fi
docker image inspect "$tag" --format '{{.Id}} {{.Size}}'
