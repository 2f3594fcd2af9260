# Shared helpers of the deploy scripts (sourced, not run).
# shellcheck shell=bash

say() { printf '==> %s\n' "$*" >&2; }

# The cargo target directory lives outside the clone, so repeated runs reuse builds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/cloud/target}"

# missing_packages PKG...: prints those of the Debian packages PKG that are not installed.
missing_packages() {
  local pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || echo "$pkg"
  done
}

# ensure_packages PKG...: installs the Debian packages that are missing, and only those.
ensure_packages() {
  local missing
  mapfile -t missing < <(missing_packages "$@")
  if [ ${#missing[@]} -eq 0 ]; then
    say "packages present: $*"
    return 0
  fi
  say "installing packages: ${missing[*]}"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# ensure_packages_without_services PKG...: ensure_packages, then stops and disables the services
# that those of PKG this call installed come with (Debian starts and enables a daemon's service on
# installation): for daemons the tests start themselves, on ports of their own. Packages that
# were there before are left as the machine's owner set them up.
ensure_packages_without_services() {
  local fresh service
  mapfile -t fresh < <(missing_packages "$@")
  ensure_packages "$@"
  [ ${#fresh[@]} -eq 0 ] && return 0
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  for service in $(dpkg-query -L "${fresh[@]}" | sed -n 's#^/etc/init\.d/##p'); do
    say "stopping and disabling the $service service the package installed"
    if [ -d /run/systemd/system ]; then
      "${sudo[@]}" systemctl disable --now --quiet "$service"
    else
      "${sudo[@]}" service "$service" stop >/dev/null 2>&1 || true
      "${sudo[@]}" update-rc.d "$service" disable >/dev/null
    fi
  done
}

# What the system needs at run time on a host: PostgreSQL server binaries for the embedded
# database; QEMU and the tools the VMM uses (qemu-img, config-drive tools); networking tools.
# shellcheck disable=SC2034 # used by the scripts that source this file
RUNTIME_PACKAGES=(postgresql qemu-system-x86 ovmf qemu-utils dosfstools mtools xorriso e2fsprogs iproute2 nftables openssh-client)

# Tools built from crates.io, kept outside the clone so repeated runs reuse them.
TOOLS_ROOT="${TOOLS_ROOT:-/var/cache/cloud/tools}"

# ensure_cargo_tool BIN CRATE VERSION [cargo install flags…]: builds BIN into $TOOLS_ROOT/bin
# unless that version is there already.
ensure_cargo_tool() {
  local bin="$1" crate="$2" version="$3"
  shift 3
  local stamp="$TOOLS_ROOT/bin/.$bin-$version"
  if [ -x "$TOOLS_ROOT/bin/$bin" ] && [ -e "$stamp" ]; then
    say "tool present: $bin $version"
    return 0
  fi
  say "building $bin ($crate $version) into $TOOLS_ROOT (a few minutes, once)"
  cargo install --quiet --locked --root "$TOOLS_ROOT" "$crate" --version "$version" "$@"
  touch "$stamp"
}

# ensure_python_tool NAME REQUIREMENTS: a venv at $TOOLS_ROOT/NAME with the pinned packages of
# REQUIREMENTS (PyPI), made again only when that file changes.
ensure_python_tool() {
  local name="$1" requirements="$2"
  local venv="$TOOLS_ROOT/$name"
  local stamp
  stamp="$venv/.requirements-$(sha256sum "$requirements" | cut -c1-16)"
  if [ -e "$stamp" ]; then
    say "tool present: $name ($requirements)"
    return 0
  fi
  say "installing $name from PyPI into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir -r "$requirements"
  touch "$stamp"
}
