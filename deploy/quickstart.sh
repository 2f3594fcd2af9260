#!/usr/bin/env bash
# Sets up this machine and runs the cloud on it: the control plane with its embedded PostgreSQL,
# and one host agent on this same machine, joined automatically, with the `minimal` guest image
# registered as a public image. Idempotent: a second run installs, builds and joins nothing new.
# Ctrl-C stops what it started (VMs keep running; a later run reattaches to them).
#
# Environment: CLOUD_DATA_DIR (default /var/lib/cloud), CLOUD_LISTEN (default 127.0.0.1:8080),
# CLOUD_AGENT_STATE_DIR (default /var/lib/cloud-agent), CLOUD_STORE_DIR (the snapshot store;
# default $CLOUD_DATA_DIR/store), CLOUD_BUILD_PROFILE (dev or release; default dev), and every
# CLOUD_* / CLOUD_AGENT_* key of the two binaries.
#
# The agent turns this machine into a hypervisor host: it creates the bridge cloudbr0 with the
# host's instance subnet (10.100.0.0/24 for the first host), an nftables table `cloud_agent`
# for egress NAT, and enables IPv4 forwarding.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=deploy/common.sh
source deploy/common.sh

[ "$(id -u)" -eq 0 ] || { say "run this as root: the host agent manages bridges, taps and VMs"; exit 1; }
ensure_packages "${RUNTIME_PACKAGES[@]}" build-essential pkg-config curl python3 nodejs
command -v npm >/dev/null || ensure_packages npm

profile="${CLOUD_BUILD_PROFILE:-dev}"
say "building the control plane and the host agent (profile $profile, target dir $CARGO_TARGET_DIR)"
cargo build --profile "$profile" -p control-plane -p host-agent -p cloudctl --bins
bin_dir="$CARGO_TARGET_DIR/$([ "$profile" = dev ] && echo debug || echo "$profile")"

say "the web console (web-console/build.sh; served by the control plane at /)"
web-console/build.sh "$bin_dir/control-plane"
export CLOUD_CONSOLE_DIR="${CLOUD_CONSOLE_DIR:-$PWD/web-console/dist}"

say "guest image: minimal (cached; rebuilt when its inputs change)"
deploy/images/build-minimal.sh
image_dir=/var/cache/cloud/images/minimal

export CLOUD_DATA_DIR="${CLOUD_DATA_DIR:-/var/lib/cloud}"
export CLOUD_LISTEN="${CLOUD_LISTEN:-127.0.0.1:8080}"
export CLOUD_AGENT_STATE_DIR="${CLOUD_AGENT_STATE_DIR:-/var/lib/cloud-agent}"
# The snapshot store: one directory both services use (they read the same CLOUD_STORE_DIR).
export CLOUD_STORE_DIR="${CLOUD_STORE_DIR:-$CLOUD_DATA_DIR/store}"
api="http://$CLOUD_LISTEN"
agent_addr="127.0.0.1:7444"

cp_pid=""
agent_pid=""
stop_all() {
  trap - INT TERM EXIT
  say "stopping the host agent and the control plane (VMs keep running)"
  local pid
  for pid in "$agent_pid" "$cp_pid"; do
    if [ -n "$pid" ]; then
      kill -TERM "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
}
trap stop_all INT TERM EXIT

say "starting the control plane on $api (data in $CLOUD_DATA_DIR)"
"$bin_dir/control-plane" serve &
cp_pid=$!
for _ in $(seq 1 600); do
  curl -sf "$api/healthz" >/dev/null 2>&1 && break
  kill -0 "$cp_pid" 2>/dev/null || { say "the control plane exited; see the messages above"; exit 1; }
  sleep 0.1
done
curl -sf "$api/healthz" >/dev/null || { say "the control plane did not become healthy"; exit 1; }
token_file="$CLOUD_DATA_DIR/admin-token"
auth=(-H "Authorization: Bearer $(cat "$token_file")")

agent_flags=(--listen "$agent_addr" --advertise-url "https://$agent_addr")
if [ ! -f "$CLOUD_AGENT_STATE_DIR/identity/host.json" ]; then
  say "joining this machine to the fleet as a host"
  join_token=$(curl -sf -X POST "${auth[@]}" -H 'content-type: application/json' -d '{}' "$api/v1/hosts/join-tokens" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  "$bin_dir/host-agent" "${agent_flags[@]}" join --control-plane "$api" --token "$join_token"
fi
say "starting the host agent on $agent_addr (state in $CLOUD_AGENT_STATE_DIR)"
"$bin_dir/host-agent" "${agent_flags[@]}" run &
agent_pid=$!

if ! curl -sf "${auth[@]}" "$api/v1/projects/default/images/minimal" >/dev/null; then
  say "registering the minimal image as a public image"
  cmdline=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["boot"]["cmdline"])' "$image_dir/manifest.json")
  body=$(python3 -c 'import json,sys; print(json.dumps({"name": "minimal", "boot_mode": "direct_kernel", "public": True,
    "kernel_path": sys.argv[1] + "/vmlinuz", "initrd_path": sys.argv[1] + "/initrd.img", "kernel_cmdline": sys.argv[2]}))' \
    "$image_dir" "$cmdline")
  curl -sf -X POST "${auth[@]}" -H 'content-type: application/json' -d "$body" "$api/v1/projects/default/images" >/dev/null
fi

cat >&2 <<EOF

  The cloud is running.
    API:          $api   (OpenAPI document: $api/v1/openapi.json)
    Web console:  $api/   (sign in with the admin token: the contents of $token_file)
    Admin token:  $token_file
    Try:          curl -s -H "Authorization: Bearer \$(cat $token_file)" $api/v1/hosts
    cloudctl:     export PATH=$bin_dir:\$PATH CLOUDCTL_ENDPOINT=$api CLOUDCTL_TOKEN=\$(cat $token_file)
                  cloudctl ssh-key create me --public-key @\$HOME/.ssh/id_ed25519.pub
                  cloudctl instance create web-1 --image minimal --memory 256MiB --ssh-key me --wait
                  cloudctl instance ssh web-1 -- uname -a
  Ctrl-C stops the control plane and the agent.

EOF
wait "$cp_pid"
