# shellcheck shell=bash
# Helpers shared by the guest image builders (build-minimal.sh, build-debian12.sh).
# Sourced, not run. The caller sets IMAGE (used in messages) and `set -euo pipefail`.

log() { printf '%s: %s\n' "${IMAGE:-images}" "$*" >&2; }
die() {
	printf '%s: error: %s\n' "${IMAGE:-images}" "$*" >&2
	exit 1
}

require_root() {
	[[ $(id -u) -eq 0 ]] || die "must run as root (apt-get, mknod, chroot, loop-free image build)"
}

# make_abs PATH: PATH made absolute (it need not exist)
make_abs() {
	case $1 in
	/*) printf '%s\n' "$1" ;;
	*) printf '%s/%s\n' "$PWD" "$1" ;;
	esac
}

# apt_get ARGS...: apt-get that waits for the dpkg lock instead of failing
apt_get() {
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@"
}

# apt_ready PACKAGE: make sure the apt lists know PACKAGE (runs apt-get update once if not)
apt_ready() {
	if ! has_candidate "$1"; then
		log "apt lists do not know $1: running apt-get update"
		apt_get update -qq >&2
		has_candidate "$1" || die "package $1 is not available from the configured apt sources"
	fi
}
has_candidate() {
	local policy
	policy=$(apt-cache policy "$1" 2>/dev/null) || return 1
	[[ $policy == *"Candidate: "[!\(]* ]]
}

# ensure_tools CMD:PACKAGE...: install (with apt-get) the packages whose command is missing
ensure_tools() {
	local spec cmd pkg missing=()
	for spec in "$@"; do
		cmd=${spec%%:*}
		pkg=${spec#*:}
		command -v "$cmd" >/dev/null 2>&1 && continue
		[[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
	done
	((${#missing[@]} == 0)) && return 0
	log "installing host tools: ${missing[*]}"
	apt_ready "${missing[0]}"
	apt_get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# json_str STRING: STRING as a JSON string literal
json_str() {
	local s=$1
	s=${s//\\/\\\\}
	s=${s//\"/\\\"}
	s=${s//$'\t'/\\t}
	s=${s//$'\n'/\\n}
	s=${s//$'\r'/\\r}
	printf '"%s"' "$s"
}

# sha256_of FILE
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# tree_digest DIR: one line per file under DIR (sorted): relative path, executable or not,
# sha256 (only what git keeps, so every checkout of the same commit gives the same digest)
tree_digest() {
	local dir=$1 f
	(
		cd "$dir" || exit 1
		find . \( -type f -o -type l \) -printf '%P\n' | LC_ALL=C sort | while IFS= read -r f; do
			if [[ -L $f ]]; then
				printf '%s link %s\n' "$f" "$(readlink "$f")"
			elif [[ -x $f ]]; then
				printf '%s x %s\n' "$f" "$(sha256_of "$f")"
			else
				printf '%s - %s\n' "$f" "$(sha256_of "$f")"
			fi
		done
	)
}

# apt_uris PACKAGE...: "filename size sha256" of the .debs apt would download, sorted
apt_uris() {
	apt-get download --print-uris "$@" |
		awk '{ h = $4; sub(/^SHA256:/, "", h); print $2, $3, h }' | LC_ALL=C sort
}

# download_debs DIR PACKAGE...: apt-get download into DIR, then check each .deb's sha256
# against apt's index
download_debs() {
	local dir=$1 name _size hash
	shift
	mkdir -p "$dir"
	# apt drops privileges to _apt for downloads: let it write there
	if getent passwd _apt >/dev/null; then chown _apt "$dir"; fi
	(cd "$dir" && apt-get download -q "$@" >&2) || die "apt-get download failed"
	while read -r name _size hash; do
		[[ -f $dir/$name ]] || die "missing download $name"
		[[ $(sha256_of "$dir/$name") == "$hash" ]] || die "sha256 mismatch for $name"
	done < <(apt_uris "$@")
}

# up_to_date OUT_DIR HASH: true when OUT_DIR holds a complete image built from inputs HASH
up_to_date() {
	local out=$1 hash=$2
	[[ -f $out/manifest.json && -f $out/SHA256SUMS ]] || return 1
	grep -q "\"inputs_sha256\": \"$hash\"" "$out/manifest.json" || return 1
	(cd "$out" && sha256sum --quiet --strict -c SHA256SUMS >/dev/null 2>&1)
}

# take_lock OUT_DIR: serialize builders of the same OUT_DIR (fd 9 stays open until exit)
take_lock() {
	mkdir -p "$(dirname "$1")"
	exec 9>"$1.lock"
	if ! flock -n 9; then
		log "another build of $1 is running: waiting for it"
		flock 9
	fi
}

# install_atomically STAGED_DIR OUT_DIR: STAGED_DIR (beside OUT_DIR, i.e. OUT_DIR.tmp) replaces
# OUT_DIR with renames only, so OUT_DIR is always either the old or the new complete image
install_atomically() {
	local staged=$1 out=$2 old stale
	sync -f "$staged" 2>/dev/null || sync
	# left by a builder killed between the two renames below
	for stale in "$out".old.*; do
		if [[ -d $stale ]]; then rm -rf "$stale"; fi
	done
	if [[ -e $out ]]; then
		old=$out.old.$$
		rm -rf "$old"
		mv -T "$out" "$old"
		mv -T "$staged" "$out"
		rm -rf "$old"
	else
		mv -T "$staged" "$out"
	fi
}
