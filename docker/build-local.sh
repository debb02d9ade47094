#!/usr/bin/env bash
# The image build that works on a machine without a registry: builds the binary on this host
# (Debian bookworm, as the real image), then an image FROM scratch with the binary, the shared
# libraries it loads, rsync and the ssh client (xivo-sync), and XiVO's classic command names as
# links (xivo-sync, xivo-monitoring-update, ...). Tags xivo-ha:<version> and xivo-ha:latest.
# docker/Dockerfile is the real-world build of the same image from Debian's images.
#
# usage: docker/build-local.sh [--binary PATH] [--standin PATH] [--repository NAME]
#   --binary: package this xivo-ha executable instead of building the release one (tests)
#   --standin: package this SIP stand-in (default: target/release/xivo-ha-sip-standin when built)
#   --repository: image name (default xivo-ha): tags NAME:<version> and NAME:latest
# Prints the tag and the image size.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=""
standin=target/release/xivo-ha-sip-standin
repository=xivo-ha
. scripts/options.sh
parse_options 12 binary standin repository -- "$@"

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
if [ -z "$version" ]; then
  echo "build-local: no version in Cargo.toml" >&2
  exit 1
fi
tag=$repository:$version

if [ -z "$binary" ]; then
  cargo build --release --locked
  binary=target/release/xivo-ha
fi

# The tools xivo-sync runs; the image has no package manager, so they come from this host.
for tool in /usr/bin/rsync /usr/bin/ssh /usr/bin/ssh-keygen; do
  if [ ! -x "$tool" ]; then
    echo "build-local: $tool is missing: apt-get install rsync openssh-client" >&2
    exit 1
  fi
done
# The tools at the paths Debian's packages give them, as in the real-world image.
# /bin/sh runs the monitor's hook commands (XIVO_HA_MONITOR_HOOK_*), as on a Debian image.
executables=("$binary=/usr/local/bin/xivo-ha" /usr/bin/rsync=/usr/bin/rsync /usr/bin/ssh=/usr/bin/ssh
  /usr/bin/ssh-keygen=/usr/bin/ssh-keygen "$(readlink -f /bin/sh)=/bin/sh")
# The project's SIP stand-in for Asterisk (tests and demo), when it is built.
if [ -x "$standin" ]; then
  executables+=("$standin=/usr/local/bin/xivo-ha-sip-standin")
fi

# The classic names, as the binary itself lists them (links::LINKS): same links as in the
# real-world image, made by `install-links` in a scratch directory.
names_dir=$(mktemp -d)
trap 'rm -rf "$names_dir"' EXIT
"$binary" install-links "$names_dir" >/dev/null
links=()
for link in "$names_dir"/*; do
  links+=("/usr/local/bin/$(basename "$link")=xivo-ha")
done
# The stand-in's remote console under Asterisk's name (`asterisk -rx`, the failback's drain).
if [ -x "$standin" ]; then
  links+=("/usr/local/bin/asterisk=xivo-ha-sip-standin")
fi

XIVO_HA_VERSION=$version scripts/scratch-image.sh "$tag" "${executables[@]}" --links "${links[@]}" >/dev/null
docker tag "$tag" "$repository:latest"
size=$(docker image inspect "$tag" --format '{{.Size}}')
echo "$tag (also $repository:latest): $((size / 1000000)) MB ($size bytes)"
