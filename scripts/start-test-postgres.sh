#!/usr/bin/env bash
# Starts the machine's Debian PostgreSQL cluster on port 5432 so that the tests can connect as
# user postgres over loopback without a password. Test machines only: it rewrites pg_hba.conf
# of that cluster to trust loopback connections.
set -euo pipefail

version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$version main"; then
  pg_createcluster "$version" main --port 5432 >/dev/null
fi
conf=/etc/postgresql/$version/main
cat > "$conf/pg_hba.conf" <<HBA
# written by xivo-ha scripts/start-test-postgres.sh (test machine only)
local   all  all                 trust
host    all  all  127.0.0.1/32   trust
host    all  all  ::1/128        trust
HBA
if pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $4}' | grep -q online; then
  pg_ctlcluster "$version" main reload
else
  pg_ctlcluster "$version" main start
fi
for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 -p 5432 && exit 0
  sleep 1
done
echo "PostgreSQL $version/main did not become ready on 127.0.0.1:5432 (see /var/log/postgresql/)" >&2
exit 1
