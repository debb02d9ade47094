#!/usr/bin/env bash
# The two-node demo: a XiVO HA pair on a private Docker network, set up in XiVO's order, then
# a failover and a failback, measured. Needs only a Docker engine, a Rust toolchain, rsync and
# the ssh client (the image carries them), jq, the host's Debian PostgreSQL binaries (apt-get
# install postgresql) and, for the copy-back, its sshd (apt-get install openssh-server; without
# it that part is skipped); no registry: every image is built FROM scratch out of this machine's
# files. Removes everything it started when it ends, also on failure or Ctrl-C (images stay,
# to make the next run fast).
#
# usage: scripts/demo.sh [--image TAG] [--prefix PREFIX] [--results FILE]
#   --image: use this xivo-ha image (with xivo-ha-sip-standin) instead of building
#            xivo-ha:<version> with docker/build-local.sh (the end-to-end test builds one from
#            the debug binaries)
#   --prefix: name prefix of the containers and the network (default xivoha-demo-)
#   --results: also write the measurements as KEY=VALUE lines to FILE (tests/e2e.rs reads it)
# The monitor runs on its defaults; XIVO_HA_MONITOR_* variables set in the environment are
# handed to the slave's monitor (the demo says so).
#
# Each node is what a XiVO is, one address with its services: a PostgreSQL container owns the
# node's network namespace (a fixed address on the demo network), and the node's stand-in
# Asterisk (xivo-ha-sip-standin, answers SIP OPTIONS on 5060/udp) and its xivo-ha sidecar
# (`xivo-ha monitor`, XIVO_HA_ROOT=/node inside the container) join that namespace, as
# `network_mode: host` does on a real node. When the image has `xivo-ha db-replic`, each node
# also runs DB Replic towards a third PostgreSQL, XiVO CC's reporting database. Node B also
# runs an sshd (the host's, in an image of its own) in that namespace, which sees B's Asterisk
# spool (a directory of the demo's, mounted in both, as the host's /var/spool/asterisk): the
# master's sync key logs in there, and after the failback A's monitor brings back the
# voicemail and recordings made on B by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

image=""
prefix=xivoha-demo-
results=""
. scripts/options.sh
parse_options 16 image prefix results -- "$@"
if ! [[ "$prefix" =~ ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$ ]]; then
  echo "demo: --prefix $prefix: letters, digits, _ . - only" >&2
  exit 2
fi

started=$(date +%s.%N)
elapsed() { awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%5.1f", b - a }'; }
say() { printf '[%s s] %s\n' "$(elapsed)" "$*"; }
step() { printf '\n[%s s] == %s\n' "$(elapsed)" "$*"; }
detail() { sed 's/^/           | /'; }
fail() { printf '[%s s] FAILED: %s\n' "$(elapsed)" "$*" >&2; exit 1; }
result() { [ -z "$results" ] || printf '%s=%s\n' "$1" "$2" >>"$results"; }
seconds_between() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
# Docker's RFC 3339 times (StartedAt, FinishedAt) as seconds since the epoch.
epoch_of() { date -d "$1" +%s.%N; }

[ -z "$results" ] || : >"$results"

# --- Names, and the teardown that runs whatever happens ---------------------------------------
net=${prefix}net
pg_a=${prefix}a-postgres       ast_a=${prefix}a-asterisk   ha_a=${prefix}a-xivo-ha
pg_b=${prefix}b-postgres       ast_b=${prefix}b-asterisk   ha_b=${prefix}b-xivo-ha
dr_a=${prefix}a-db-replic      dr_b=${prefix}b-db-replic   pg_r=${prefix}reporting
ssh_b=${prefix}b-sshd
containers=("$ha_a" "$ha_b" "$dr_a" "$dr_b" "$ast_a" "$ast_b" "$ssh_b" "$pg_a" "$pg_b" "$pg_r")
work=$(mktemp -d)

teardown() {
  local status=$?
  trap - EXIT INT TERM
  step "Teardown"
  # Every container first (the monitors probe addresses on the network), then the network.
  docker rm -f "${containers[@]}" >/dev/null 2>&1 || true
  local left
  left=$(docker ps -aq --filter "name=^/${prefix}" 2>/dev/null || true)
  [ -z "$left" ] || docker rm -f $left >/dev/null 2>&1 || true
  docker network rm "$net" >/dev/null 2>&1 || true
  rm -rf "$work"
  local containers_left networks_left
  containers_left=$(docker ps -aq --filter "name=^/${prefix}" | wc -l)
  networks_left=$(docker network ls -q --filter "name=^${prefix}" | wc -l)
  say "removed: containers left $containers_left, networks left $networks_left (images kept)"
  result containers_left "$containers_left"
  result networks_left "$networks_left"
  result total_s "$(elapsed | tr -d ' ')"
  if [ "$status" -eq 0 ]; then
    say "demo finished in $(elapsed | tr -d ' ') s"
  else
    say "demo stopped (exit $status) after $(elapsed | tr -d ' ') s"
  fi
  result exit "$status"
  exit "$status"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- Preconditions ---------------------------------------------------------------------------
docker info >/dev/null 2>&1 || fail "the Docker engine does not answer (docker info): start dockerd, or run as a user of the docker group"
if [ -n "$(docker ps -aq --filter "name=^/${prefix}")" ] || [ -n "$(docker network ls -q --filter "name=^${prefix}")" ]; then
  trap - EXIT
  echo "demo: containers or a network named ${prefix}* exist (another demo running, or one killed with SIGKILL)." >&2
  echo "demo: remove them with: docker rm -f \$(docker ps -aq --filter name=^/${prefix}); docker network rm ${prefix}net" >&2
  exit 1
fi
pg_version=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1)
pg_bin=/usr/lib/postgresql/$pg_version/bin
[ -n "$pg_version" ] && [ -x "$pg_bin/postgres" ] && [ -x "$pg_bin/initdb" ] && [ -x "$pg_bin/psql" ] ||
  fail "no PostgreSQL binaries under /usr/lib/postgresql/<version>/bin: apt-get install postgresql (the demo packs them into an image; it starts no PostgreSQL on the host)"
command -v jq >/dev/null || fail "no jq: apt-get install jq (the demo reads the nodes' state documents with it)"
copy_back=yes
if [ ! -x /usr/sbin/sshd ] || ! command -v ssh-keygen >/dev/null; then
  copy_back=no
  say "no /usr/sbin/sshd or ssh-keygen here: node B gets no sshd, the copy-back is skipped (apt-get install openssh-server)"
fi

# --- Images ----------------------------------------------------------------------------------
step "Images (built locally, FROM scratch: no registry)"
if [ -z "$image" ]; then
  say "building xivo-ha's image with docker/build-local.sh (cargo build --release: minutes the first time)"
  built=$(docker/build-local.sh) || fail "docker/build-local.sh failed"
  image=${built%% *}
fi
docker image inspect "$image" >/dev/null 2>&1 || fail "no image $image"
docker run --rm --network none "$image" xivo-ha-sip-standin --help >/dev/null 2>&1 ||
  [ $? -ne 127 ] || fail "$image has no xivo-ha-sip-standin: build it (cargo build --release) and rebuild the image"
say "xivo-ha: $image ($(docker image inspect "$image" --format '{{.Size}}' | awk '{ printf "%d MB", $1 / 1e6 }'))"
# DB Replic (xivo-ha db-replic) forwards each node's call events to XiVO CC's reporting database.
dbreplic=no
if docker run --rm --network none "$image" xivo-ha db-replic --help >/dev/null 2>&1; then
  dbreplic=yes
fi
result dbreplic "$dbreplic"
# PostgreSQL from the host's Debian binaries, run as an unprivileged user (it refuses root).
pg_image=xivoha-demo-postgres:$pg_version
pg_files=$( (find "/usr/share/postgresql/$pg_version" -type f -not -path '*/man/*'
  find "/usr/lib/postgresql/$pg_version/lib" -maxdepth 1 -name '*.so' -not -name 'llvmjit*' -not -name 'sepgsql*'
  ls /usr/share/zoneinfo/Etc/UTC) )
# shellcheck disable=SC2086 # one file per word
scripts/scratch-image.sh "$pg_image" "$pg_bin/postgres=$pg_bin/postgres" "$pg_bin/initdb=$pg_bin/initdb" \
  "$pg_bin/psql=$pg_bin/psql" /bin/sh=/bin/sh --users postgres=999 -- $pg_files >/dev/null ||
  fail "cannot build the PostgreSQL image"
say "PostgreSQL: $pg_image ($(docker image inspect "$pg_image" --format '{{.Size}}' | awk '{ printf "%d MB", $1 / 1e6 }'), from $pg_bin)"
if [ "$copy_back" = yes ]; then
  # The host's sshd, rsync for the server side of the master's copies, and GNU find and date
  # with which the copy-back lists what changed on B (sshd's privilege separation user, sshd,
  # must exist).
  sshd_image=xivoha-demo-sshd:2
  scripts/scratch-image.sh "$sshd_image" /usr/sbin/sshd=/usr/sbin/sshd /usr/bin/rsync=/usr/bin/rsync \
    "$(readlink -f /bin/sh)=/bin/sh" "$(command -v find)=/usr/bin/find" "$(command -v date)=/usr/bin/date" \
    --users sshd=101 >/dev/null || fail "cannot build the sshd image"
  say "sshd: $sshd_image ($(docker image inspect "$sshd_image" --format '{{.Size}}' | awk '{ printf "%d MB", $1 / 1e6 }'), from /usr/sbin/sshd)"
fi

# --- Network: a subnet Docker picks, then fixed node addresses in it ----------------------------
step "Network"
# A node keeps its address when it restarts (the slave probes that address): fixed addresses
# need a subnet given at creation, so let Docker choose a free one, then create it with it.
# (Another network may take that subnet in between, hence a few attempts.)
for attempt in 1 2 3 4 5; do
  docker network create "$net" >/dev/null
  subnet=$(docker network inspect "$net" --format '{{range .IPAM.Config}}{{.Subnet}}{{end}}')
  docker network rm "$net" >/dev/null
  [[ "$subnet" =~ ^([0-9]+\.[0-9]+\.[0-9]+)\.0/([0-9]+)$ ]] && [ "${BASH_REMATCH[2]}" -le 24 ] ||
    fail "unexpected subnet from Docker: $subnet"
  base=${BASH_REMATCH[1]}
  docker network create --subnet "$subnet" "$net" >/dev/null 2>&1 && break
  [ "$attempt" -lt 5 ] || fail "cannot create the network $net"
done
ip_a=$base.10
ip_b=$base.20
ip_r=$base.30
say "private network $net, $subnet: node A (master) $ip_a, node B (slave) $ip_b"
[ "$dbreplic" = no ] || say "XiVO CC's reporting PostgreSQL: $ip_r"

# --- Nodes -----------------------------------------------------------------------------------
pg_password=$(od -An -N9 -tx1 /dev/urandom | tr -d ' \n')
psql_in() { # psql_in CONTAINER ARGS...: psql inside the node's PostgreSQL container
  local container=$1
  shift
  docker exec -i "$container" "$pg_bin/psql" -h /tmp -U postgres -X -q -v ON_ERROR_STOP=1 "$@"
}

start_postgres() { # start_postgres CONTAINER IP
  # First start: initdb (password for TCP, trust on the local socket), every address admitted
  # with that password. Later starts reuse the data directory in the container's layer.
  docker run -d --name "$1" --network "$net" --ip "$2" --user 999:999 \
    --stop-signal SIGINT --stop-timeout 5 -e "PGPASSWORD_INIT=$pg_password" "$pg_image" \
    /bin/sh -c "set -e
      if [ ! -s /tmp/pgdata/PG_VERSION ]; then
        echo \"\$PGPASSWORD_INIT\" >/tmp/pw
        $pg_bin/initdb -D /tmp/pgdata -U postgres --no-locale -E UTF8 --no-sync \
          --auth-local=trust --auth-host=scram-sha-256 --pwfile=/tmp/pw >/tmp/initdb.log 2>&1 ||
          { cat /tmp/initdb.log; exit 1; }
        echo 'host all all all scram-sha-256' >>/tmp/pgdata/pg_hba.conf
      fi
      exec $pg_bin/postgres -D /tmp/pgdata -c listen_addresses=* -c unix_socket_directories=/tmp \
        -c fsync=off -c synchronous_commit=off" >/dev/null
}

wait_postgres() { # wait_postgres CONTAINER
  for _ in $(seq 1 150); do
    psql_in "$1" -Atc 'SELECT 1' >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  docker logs "$1" 2>&1 | tail -n 20 | detail
  fail "$1: PostgreSQL did not start within 30 s"
}

node_env() { # node_env NODE: the node's custom.env (XiVO CC's site file), given with --env-file
  local file=$work/$1.env
  {
    echo "XIVO_HA_ROOT=/node"
    echo "XIVO_HA_DB=host=127.0.0.1 user=postgres password=$pg_password dbname=asterisk"
    echo "XIVO_HA_SLAVE_DB_PASSWORD=$pg_password"
    # DB Replic: the reporting database; no Elasticsearch in the demo (nothing listens on the
    # node's loopback: that sink retries, the PostgreSQL one does not depend on it).
    echo "REPORTING_DB_HOST=$ip_r"
    echo "REPORTING_DB_PORT=5432"
    echo "REPORTING_DB_USER=postgres"
    echo "REPORTING_DB_PASSWORD=$pg_password"
    echo "ELASTICSEARCH=http://127.0.0.1:9200"
    # The slave forwards its call events only (HA mode); the master also the configuration.
    echo "IS_HA_SLAVE=$([ "$1" = b ] && echo true || echo false)"
    echo "DB_REPLIC_ORIGIN=xivo-$1"
  } >"$file"
  echo "$file"
}

provd_default() { # provd_default NODE IP: provd's registrar configuration, as XiVO installs it
  mkdir -p "$work/$1/var/lib/xivo-provd/jsondb/configs" "$work/$1/var/lib/xivo" "$work/$1/etc/xivo"
  printf '{"id": "default", "X_type": "registrar", "deletable": false, "displayname": "local", "parent_ids": [], "raw_config": {"X_key": "xivo"}, "registrar_main": "%s", "proxy_main": "%s"}\n' \
    "$2" "$2" >"$work/$1/var/lib/xivo-provd/jsondb/configs/default"
}

start_sidecar() { # start_sidecar CONTAINER NODE NAMESPACE [docker run options...]
  local name=$1 node=$2 namespace=$3
  shift 3
  provd_default "$node" "$([ "$node" = a ] && echo "$ip_a" || echo "$ip_b")"
  docker create --name "$name" --network "container:$namespace" --cap-add NET_RAW \
    --env-file "$work/$node.env" "$@" "$image" xivo-ha monitor >/dev/null
  docker cp "$work/$node/." "$name:/node" >/dev/null
  docker start "$name" >/dev/null
}

start_db_replic() { # start_db_replic CONTAINER NODE NAMESPACE: XiVO CC enabled (xc_enabled)
  [ "$dbreplic" = yes ] || return 0
  mkdir -p "$work/$2-xc/var/lib/xivo"
  : >"$work/$2-xc/var/lib/xivo/xc_enabled"
  docker create --name "$1" --network "container:$3" --env-file "$work/$2.env" \
    "$image" xivo-ha db-replic >/dev/null
  docker cp "$work/$2-xc/." "$1:/node" >/dev/null
  docker start "$1" >/dev/null
}

ha() { # ha CONTAINER ARGS...: a command in the node's sidecar, as an administrator types it
  # (its info logs left out: the command's own output says what it did)
  docker exec -e XIVO_HA_LOG=warn "$1" "${@:2}"
}

monitor_field() { # monitor_field CONTAINER FIELD: a string field of the monitor's state file
  docker exec "$1" xivo-ha status --json 2>/dev/null |
    sed -n "s/.*\"$2\": *\"\([^\"]*\)\".*/\1/p" | head -n 1
}

state_of() { docker inspect -f '{{.State.Status}}' "$1"; }

wait_for() { # wait_for TIMEOUT_S DESCRIPTION COMMAND...: polls every 0.1 s
  local timeout=$1 description=$2
  shift 2
  local deadline
  deadline=$(awk -v t="$timeout" -v now="$(date +%s.%N)" 'BEGIN { printf "%.3f", now + t }')
  until "$@"; do
    if awk -v d="$deadline" -v now="$(date +%s.%N)" 'BEGIN { exit !(now > d) }'; then
      fail "after ${timeout} s, still not: $description"
    fi
    sleep 0.1
  done
}

is_state() { [ "$(state_of "$1")" = "$2" ]; }
verdict_is() { [ "$(monitor_field "$ha_b" verdict)" = "$1" ]; }

fingerprints() { # fingerprints CONTAINER: per replicated table, its rows and an md5 of them
  local excluded="'call_log','call_log_participant','cel','queue_log','session','stat_agent',"
  excluded+="'stat_agent_periodic','stat_call_on_queue','stat_queue','stat_queue_periodic',"
  excluded+="'mail','monitoring','netiface','resolvconf'"
  psql_in "$1" -d asterisk -At -F ' ' -c "
    SELECT c.relname, (xpath('/row/n/text()', x))[1]::text, coalesce((xpath('/row/h/text()', x))[1]::text, '-')
    FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace,
    LATERAL query_to_xml(format('SELECT count(*) AS n, md5(string_agg(t::text, chr(10) ORDER BY t::text)) AS h FROM public.%I t', c.relname), false, true, '') x
    WHERE s.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.relname <> ALL (ARRAY[$excluded])
    ORDER BY c.relname"
}

users_of() { psql_in "$1" -d asterisk -Atc "SELECT coalesce(string_agg(firstname || ' ' || lastname, ', ' ORDER BY id), 'none') FROM userfeatures"; }

# Node B's Asterisk spool (voicemail, recordings), seen by its Asterisk and its sshd.
spool_b=$work/b-spool
mkdir -p "$spool_b"
if [ "$copy_back" = yes ]; then
  # The master's sync key, as `xivo-sync -i` makes it (step 4), in A's tree; B's sshd host key.
  mkdir -p "$work/a/root/.ssh" "$work/b-ssh"
  ssh-keygen -q -t ed25519 -N '' -C 'XiVO HA (demo)' -f "$work/a/root/.ssh/xivo_id_rsa"
  ssh-keygen -q -t ed25519 -N '' -C "$ssh_b" -f "$work/b-ssh/host_key"
  cp "$work/a/root/.ssh/xivo_id_rsa.pub" "$work/b-ssh/authorized_keys"
fi

step "Node A (the master-to-be): PostgreSQL with a XiVO configuration, Asterisk, xivo-ha"
start_postgres "$pg_a" "$ip_a"
start_postgres "$pg_b" "$ip_b"
[ "$dbreplic" = no ] || start_postgres "$pg_r" "$ip_r"
wait_postgres "$pg_a"
psql_in "$pg_a" -c 'CREATE DATABASE asterisk'
psql_in "$pg_a" -d asterisk <tests/fixtures/asterisk-schema.sql
psql_in "$pg_a" -d asterisk <tests/fixtures/asterisk-data.sql
say "$pg_a: database asterisk loaded with tests/fixtures (users: $(users_of "$pg_a"))"
docker run -d --name "$ast_a" --network "container:$pg_a" --restart always "$image" xivo-ha-sip-standin >/dev/null
say "$ast_a: stand-in Asterisk answering SIP on $ip_a:5060"
node_env a >/dev/null
start_sidecar "$ha_a" a "$pg_a"
say "$ha_a: xivo-ha monitor (no ha.conf yet: HA disabled, idle)"
if [ "$dbreplic" = yes ]; then
  wait_postgres "$pg_r"
  psql_in "$pg_r" -c 'CREATE DATABASE xivo_stats'
  start_db_replic "$dr_a" a "$pg_a"
  say "$dr_a: xivo-ha db-replic, origin xivo-a, to $pg_r (XiVO CC's xivo_stats)"
fi

step "Node B (the slave-to-be): a fresh XiVO, same schema, its own default configuration"
wait_postgres "$pg_b"
psql_in "$pg_b" -c 'CREATE DATABASE asterisk'
psql_in "$pg_b" -d asterisk <tests/fixtures/asterisk-schema.sql
psql_in "$pg_b" -d asterisk <<'SQL'
INSERT INTO alembic_version VALUES ('2b85d2e2f2d0');
INSERT INTO staticsip (filename, category, var_name, var_val) VALUES
    ('sip.conf', 'general', 'bindport', '5060'), ('sip.conf', 'general', 'minexpiry', '60'),
    ('sip.conf', 'general', 'maxexpiry', '3600'), ('sip.conf', 'general', 'defaultexpiry', '120');
INSERT INTO context (name, displayname, entity, contexttype) VALUES ('default', 'Default', 'entity', 'internal');
SQL
say "$pg_b: database asterisk, schema only (users: $(users_of "$pg_b"))"
# A standalone XiVO runs Asterisk; docker compose would give it restart policy `always`.
docker run -d --name "$ast_b" --network "container:$pg_b" --restart always \
  -v "$spool_b:/var/spool/asterisk" "$image" xivo-ha-sip-standin >/dev/null
say "$ast_b: stand-in Asterisk running (restart policy always), as on any standalone XiVO"
if [ "$copy_back" = yes ]; then
  printf '%s\n' "ListenAddress $ip_b" "Port 22" "HostKey /etc/ssh/host_key" \
    "AuthorizedKeysFile /etc/ssh/authorized_keys" "PermitRootLogin prohibit-password" "StrictModes no" \
    "PidFile /tmp/sshd.pid" "UsePAM no" "PasswordAuthentication no" "KbdInteractiveAuthentication no" \
    >"$work/b-ssh/sshd_config"
  docker create --name "$ssh_b" --network "container:$pg_b" --tmpfs /run/sshd:mode=0755 \
    -v "$spool_b:/var/spool/asterisk" "$sshd_image" /usr/sbin/sshd -D -e -f /etc/ssh/sshd_config >/dev/null
  docker cp "$work/b-ssh/." "$ssh_b:/etc/ssh" >/dev/null
  docker start "$ssh_b" >/dev/null
  say "$ssh_b: sshd on $ip_b:22, seeing B's spool /var/spool/asterisk"
fi
env_b=$(node_env b)
echo "XIVO_HA_MONITOR_CONTAINERS=$ast_b" >>"$env_b"
overrides=$(env | grep '^XIVO_HA_MONITOR_' | grep -v '^XIVO_HA_MONITOR_CONTAINERS=' || true)
if [ -n "$overrides" ]; then
  echo "$overrides" >>"$env_b"
  say "monitor settings from the environment (instead of the defaults): $(echo "$overrides" | tr '\n' ' ')"
else
  say "monitor settings: the defaults (1 s rounds, down after 3 bad rounds, up after 5 good ones, hold-down 10 s)"
fi
# The Docker socket: the monitor starts and stops B's Asterisk, and only the containers
# listed in XIVO_HA_MONITOR_CONTAINERS.
docker_socket=/var/run/docker.sock
case "${DOCKER_HOST:-}" in
  unix://*) docker_socket=${DOCKER_HOST#unix://} ;;
  "") ;;
  *) fail "DOCKER_HOST=$DOCKER_HOST: B's monitor needs the engine's Unix socket to mount" ;;
esac
start_sidecar "$ha_b" b "$pg_b" -v "$docker_socket:/var/run/docker.sock"
say "$ha_b: xivo-ha monitor with the Docker socket, acting only on $ast_b"
if [ "$dbreplic" = yes ]; then
  start_db_replic "$dr_b" b "$pg_b"
  say "$dr_b: xivo-ha db-replic, origin xivo-b, to $pg_r"
fi

step "1. Configure A as master (its slave: B)    [web interface on XiVO; here xivo-ha configure]"
ha "$ha_a" xivo-ha configure master "$ip_b" | detail
step "2. Restart A's services                     [xivo-service restart; here: restart the sidecar]"
docker restart -t 5 "$ha_a" >/dev/null
say "$ha_a restarted: $(docker logs "$ha_a" 2>&1 | grep 'monitor started' | tail -n 1 | sed 's/.*monitor started/monitor started/')"

step "3. Configure B as slave (its master: A), restart B's services"
ha "$ha_b" xivo-ha configure slave "$ip_a" | detail
docker restart -t 5 "$ha_b" >/dev/null
say "$ha_b restarted: probing A at $ip_a"

if [ "$copy_back" = yes ]; then
  step "4. xivo-sync -i                             [asks B's root password: the demo made the key it makes and gave it to B's sshd]"
  say "A's sync key /root/.ssh/xivo_id_rsa: $(cut -d' ' -f1,3- "$work/a/root/.ssh/xivo_id_rsa.pub"), in B's authorized_keys"
else
  step "4. xivo-sync -i                             [skipped: no sshd on this machine for node B; tests/sync.rs covers it]"
fi

step "5. Replicate A's configuration to B         [xivo-master-slave-db-replication $ip_b, on A]"
ha "$ha_a" xivo-master-slave-db-replication "$ip_b" | detail
fingerprints "$pg_a" >"$work/a.fp"
fingerprints "$pg_b" >"$work/b.fp"
tables=$(wc -l <"$work/a.fp")
rows=$(awk '{ n += $2 } END { print n + 0 }' "$work/a.fp")
if cmp -s "$work/a.fp" "$work/b.fp"; then
  say "B's configuration equals A's: $tables replicated tables, $rows rows, same md5 per table"
  say "users on B now: $(users_of "$pg_b")"
  result config_equal yes
else
  diff "$work/a.fp" "$work/b.fp" | detail
  result config_equal no
  fail "B's configuration differs from A's after the replication"
fi
result config_tables "$tables"
result config_rows "$rows"

step "6. Resynchronise the devices, 7. XiVO Client addresses   [nothing to do: the demo has no phones]"

step "B stands by: its monitor sees A answer SIP and stops B's Asterisk"
wait_for 30 "B's monitor says the master is up" verdict_is up
wait_for 30 "$ast_b stopped" is_state "$ast_b" exited
say "$ast_b: $(state_of "$ast_b"), restart policy $(docker inspect -f '{{.HostConfig.RestartPolicy.Name}}' "$ast_b")"
say "B: $(ha "$ha_b" xivo-ha status | grep "^monitor:")"
result standby yes

step "Failover: stop node A (its xivo-ha, Asterisk and PostgreSQL)"
t_stop=$(date +%s.%N)
a_containers=("$ha_a" "$ast_a")
[ "$dbreplic" = no ] || a_containers+=("$dr_a")
docker stop -t 5 "${a_containers[@]}" "$pg_a" >/dev/null
say "node A stopped ($(seconds_between "$t_stop" "$(date +%s.%N)") s); waiting for B to take over"
wait_for 60 "$ast_b running" is_state "$ast_b" running
t_started=$(epoch_of "$(docker inspect -f '{{.State.StartedAt}}' "$ast_b")")
failover=$(seconds_between "$t_stop" "$t_started")
say "B TOOK OVER: $ast_b running ${failover} s after A was stopped"
docker exec "$ast_b" xivo-ha-sip-standin --check >/dev/null && say "$ast_b answers SIP on $ip_b:5060"
say "B: $(ha "$ha_b" xivo-ha status | grep "^monitor:")"
result failover_s "$failover"

if [ "$dbreplic" = yes ]; then
  step "A call on B while A is down: its CEL reaches the reporting database with B as origin"
  uid="$(date +%s).42"
  cel_id=$(psql_in "$pg_b" -d asterisk -At -c "INSERT INTO cel (eventtype, eventtime, userdeftype,
      cid_name, cid_num, cid_ani, cid_rdnis, cid_dnid, exten, context, channame, appname, appdata,
      amaflags, accountcode, peeraccount, uniqueid, linkedid, userfield, peer)
    VALUES ('CHAN_START', now(), '', 'Bob Durand', '1002', '1002', '', '', '1001', 'default',
      'SIP/ef34gh-00000001', '', '', 3, '', '', '$uid', '$uid', '', '') RETURNING id")
  t_cel=$(date +%s.%N)
  say "CEL id $cel_id (uniqueid $uid) written in B's database, as B's Asterisk would"
  cel_origin() { psql_in "$pg_r" -d xivo_stats -At -c "SELECT origin FROM cel WHERE uniqueid = '$uid'" 2>/dev/null; }
  cel_arrived() { [ -n "$(cel_origin)" ]; }
  wait_for 30 "the CEL $uid in the reporting database" cel_arrived
  origin=$(cel_origin)
  cel_s=$(seconds_between "$t_cel" "$(date +%s.%N)")
  say "in the reporting database after $cel_s s: origin $origin"
  psql_in "$pg_r" -d xivo_stats -At -F ' ' -c "SELECT origin, string_agg(id::text || ' (' || cid_name || ')', ', ' ORDER BY id) FROM cel GROUP BY origin ORDER BY origin" |
    sed 's/^\([^ ]*\) /\1: cel /' | detail
  result cel_origin "$origin"
  result cel_s "$cel_s"
fi

step "Users on B while A is down: a voicemail message, a recorded call, DND switched on"
inbox=voicemail/default/1001/INBOX
mkdir -p "$spool_b/$inbox" "$spool_b/monitor"
printf 'callerid="Bob Durand" <1002>\norigdate=%s\n' "$(date -u)" >"$spool_b/$inbox/msg0000.txt"
head -c 16000 /dev/urandom >"$spool_b/$inbox/msg0000.wav"
head -c 48000 /dev/urandom >"$spool_b/monitor/call-1001-1002.wav"
say "on B, as its Asterisk would write them: /var/spool/asterisk/$inbox/msg0000.{txt,wav}, /var/spool/asterisk/monitor/call-1001-1002.wav"
psql_in "$pg_b" -d asterisk -c "UPDATE userfeatures SET enablednd = 1 WHERE firstname = 'Alice'"
say "Alice switched DND on from her phone: userfeatures.enablednd = 1 in B's database"

step "Failback: start node A again"
t_back=$(date +%s.%N)
docker start "$pg_a" >/dev/null
docker start "$ast_a" "$ha_a" >/dev/null
[ "$dbreplic" = no ] || docker start "$dr_a" >/dev/null
wait_postgres "$pg_a"
say "node A running again; B hands back once A has answered 5 rounds, and not before 10 s after the failover (hold-down)"
wait_for 90 "$ast_b stopped again" is_state "$ast_b" exited
t_finished=$(epoch_of "$(docker inspect -f '{{.State.FinishedAt}}' "$ast_b")")
failback=$(seconds_between "$t_back" "$t_finished")
held=$(seconds_between "$t_started" "$t_finished")
say "FAILBACK: $ast_b stopped ${failback} s after A was started (${held} s after B took over)"
say "B: $(ha "$ha_b" xivo-ha status | grep "^monitor:")"
result failback_s "$failback"
result standin_s "$held"

step "After the failback, without a command: A brings home what was made on B"
a_file() { # a_file PATH: A's copy of a file of its tree (A's sidecar's /node), to stdout
  docker cp "$ha_a:/node$1" - 2>/dev/null | tar -xO 2>/dev/null
}
a_json() { docker cp "$ha_a:/node/var/lib/xivo-ha/$1" - 2>/dev/null | tar -xO 2>/dev/null; }
copied=0
if [ "$copy_back" = yes ]; then
  same_on_a() { # same_on_a PATH: A's copy of B's spool file PATH equals B's
    cmp -s <(a_file "/var/spool/asterisk/$1") "$spool_b/$1"
  }
  files_on_a() { same_on_a "$inbox/msg0000.txt" && same_on_a "$inbox/msg0000.wav" && same_on_a monitor/call-1001-1002.wav; }
  # At the failback (A sees B's SIP go silent) or, when B handed back before A's monitor saw it
  # serve, at that monitor's first round with B standing by.
  wait_for 60 "B's voicemail and recording on A" files_on_a
  copied=$(a_json sync-back.json | jq -r '.files_transferred // 0')
  say "on A: $(a_json sync-back.json | jq -r '.summary')"
  result copy_back yes
else
  result copy_back skipped
fi
result copied_back_files "$copied"
say "A's monitor: $(docker logs "$ha_a" 2>&1 | grep -E 'failback done|job copy-back' | sed 's/^.*\(INFO\|WARN\) xivo_ha[a-z_:]*: //' | paste -sd'|' - | sed 's/|/ | /g')"
# The replication that follows the failback (the user statuses made on B merged back first).
t_handback=$t_finished
replicated_after_failback() {
  local at
  at=$(a_json replication.json | jq -r '.at // empty')
  [ -n "$at" ] && awk -v a="$(epoch_of "$at")" -v b="$t_handback" 'BEGIN { exit !(a > b - 1) }'
}
wait_for 75 "a replication of A after the failback" replicated_after_failback
say "A's last replication: $(a_json replication.json | jq -r '.summary')"
dnd=$(psql_in "$pg_a" -d asterisk -Atc "SELECT enablednd FROM userfeatures WHERE firstname = 'Alice'")
say "Alice's DND on A: $dnd"
result dnd_on_a "$([ "$dnd" = 1 ] && echo yes || echo no)"
# The user statuses the replication merged back from B: its record's `merged_back` list.
merged=$(a_json replication.json | jq -r '(.merged_back // .details.merged_back // []) | length')
result merged_back "$merged"

step "Summary"
say "configuration replicated A -> B: $tables tables, $rows rows, identical"
say "failover: ${failover} s from stopping A to B's Asterisk running"
say "failback: ${failback} s from starting A to B's Asterisk stopped (B served ${held} s)"
[ "$dbreplic" = no ] || say "DB Replic: a CEL written on B during the failover reached the reporting database in ${cel_s} s, origin $origin"
say "after failback: $merged user statuses merged back, $copied files copied back"
