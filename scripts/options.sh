# Sourced by the scripts that take `--NAME VALUE` options (docker/build-local.sh,
# scripts/demo.sh): `parse_options LAST NAME... -- "$@"` sets the shell variable NAME from
# each `--NAME VALUE` given; any other word, or an option without its value, prints the
# script's usage (its header comment, lines 2 to LAST) on stderr and exits 2.
parse_options() {
  local last=$1 names=() name known
  shift
  while [ "$1" != "--" ]; do
    names+=("$1")
    shift
  done
  shift
  while [ $# -gt 0 ]; do
    known=""
    for name in "${names[@]}"; do
      if [ "$1" = "--$name" ] && [ $# -ge 2 ]; then
        printf -v "$name" '%s' "$2"
        known=yes
      fi
    done
    if [ -z "$known" ]; then
      sed -n "2,${last}p" "$0" >&2
      exit 2
    fi
    shift 2
  done
}
