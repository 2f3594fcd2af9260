#!/usr/bin/env bash
# Sets up this machine and runs the cloud on it: the control plane with its embedded PostgreSQL.
# Idempotent: a second run installs and builds nothing new. Ctrl-C stops everything it started.
#
# Environment: CLOUD_DATA_DIR (default /var/lib/cloud), CLOUD_LISTEN (default 127.0.0.1:8080),
# CLOUD_BUILD_PROFILE (dev or release; default dev) and every CLOUD_* key of the control plane.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=deploy/common.sh
source deploy/common.sh

ensure_packages "${RUNTIME_PACKAGES[@]}" build-essential pkg-config

profile="${CLOUD_BUILD_PROFILE:-dev}"
say "building the control plane (profile $profile, target dir $CARGO_TARGET_DIR)"
cargo build --profile "$profile" -p control-plane --bin control-plane
bin_dir="$CARGO_TARGET_DIR/$([ "$profile" = dev ] && echo debug || echo "$profile")"

export CLOUD_DATA_DIR="${CLOUD_DATA_DIR:-/var/lib/cloud}"
export CLOUD_LISTEN="${CLOUD_LISTEN:-127.0.0.1:8080}"
say "starting the control plane on http://$CLOUD_LISTEN (data in $CLOUD_DATA_DIR; Ctrl-C stops it)"
say "check it with: curl -s http://$CLOUD_LISTEN/healthz"
exec "$bin_dir/control-plane" serve
