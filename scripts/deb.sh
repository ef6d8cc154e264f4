#!/usr/bin/env bash
# Builds the Debian package target/debian/rack-gateway_<version>_amd64.deb
# with cargo-deb (installed at a pinned version if missing), from the
# stripped release binary and the assets the binary generates itself (man
# page, shell completions) plus the unit from systemd/ with ExecStart in
# /usr/bin.
#
#   scripts/deb.sh           build the package
#   scripts/deb.sh --check   build it, then (as root, on Debian) install it with
#                            dpkg -i, check what it installed, remove it with
#                            dpkg -r and purge it. Never starts a service.
#
# scripts/test.sh runs `--check` after the test suite when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo_deb_version=3.8.0
pkg=rack-gateway

check=false
case "${1:-}" in
  "") ;;
  --check) check=true ;;
  *) echo "usage: scripts/deb.sh [--check]" >&2; exit 2 ;;
esac

die() { echo "scripts/deb.sh: $*" >&2; exit 1; }
passed=0
ok() { passed=$((passed + 1)); echo "deb check: ok: $*"; }
fail() { echo "deb check: FAILED: $*" >&2; exit 1; }

if ! cargo deb --version 2>/dev/null | grep -q "$cargo_deb_version"; then
  echo "scripts/deb.sh: installing cargo-deb $cargo_deb_version (cargo install, from crates.io)"
  cargo install cargo-deb --version "$cargo_deb_version" --locked --quiet
fi

cargo build --release --locked
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$target" ] || die "cannot find the target directory (cargo metadata)"
bin="$target/release/$pkg"
gen="$target/release/packaging"
rm -rf "$gen"
mkdir -p "$gen/completions"

# The unit in systemd/ is written for a hand install in /usr/local/bin; the
# package's binary is /usr/bin/rack-gateway.
{
  echo "# Installed by the $pkg package, with ExecStart in /usr/bin. The package did"
  echo "# the binary, unit and directory steps below; start at the config (the steps"
  echo "# are in /usr/share/doc/$pkg/README.md, section Install)."
  sed 's#^\(\#\{0,1\}ExecStart=\)/usr/local/bin/rack-gateway #\1/usr/bin/rack-gateway #' systemd/rack-gateway.service
} >"$gen/rack-gateway.service"
grep -q '^ExecStart=/usr/bin/rack-gateway serve ' "$gen/rack-gateway.service" \
  || die "systemd/rack-gateway.service: no \`ExecStart=/usr/local/bin/rack-gateway serve\` line to rewrite"
if grep -q '^ExecStart=/usr/local' "$gen/rack-gateway.service"; then
  die "systemd/rack-gateway.service: an ExecStart= line still points at /usr/local"
fi

"$bin" man | gzip -9n >"$gen/rack-gateway.1.gz"
"$bin" completions bash >"$gen/completions/rack-gateway.bash"
"$bin" completions zsh >"$gen/completions/_rack-gateway"
"$bin" completions fish >"$gen/completions/rack-gateway.fish"
for f in "$gen/rack-gateway.1.gz" "$gen"/completions/*; do
  [ -s "$f" ] || die "$f is empty"
done

cargo deb --no-build --quiet
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
deb="$target/debian/${pkg}_${version}_${arch}.deb"
[ -f "$deb" ] || die "cargo deb did not write $deb"
echo "scripts/deb.sh: built $deb ($(du -h "$deb" | cut -f1); binary $(du -h "$bin" | cut -f1))"

$check || exit 0

# --- Install, check, remove --------------------------------------------------
[ "$(id -u)" = 0 ] || die "--check installs the package: run it as root"
command -v dpkg >/dev/null || die "--check needs dpkg (Debian or Ubuntu)"
if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed"; then
  die "$pkg is already installed on this machine; --check installs and removes its own copy (dpkg -r $pkg first)"
fi
# What `man` and bash's completion loader need to find the files.
missing=()
for p in man-db bash-completion pkg-config; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; }
fi

trap 'dpkg --purge "$pkg" >/dev/null 2>&1 || true' EXIT
# --path-include: minimal images exclude /usr/share/{man,doc} in dpkg.cfg.d.
install_out=$(dpkg --path-include='/usr/share/man/man1/rack-gateway.1.gz' \
  --path-include='/usr/share/doc/rack-gateway/*' -i "$deb" 2>&1) \
  || fail "dpkg -i: $install_out"
grep -q "installed but not enabled or started" <<<"$install_out" \
  || fail "postinst did not print what to do next: $install_out"
ok "dpkg -i $(basename "$deb"); postinst printed the next steps"

[ "$(/usr/bin/rack-gateway --version)" = "$pkg $version" ] || fail "/usr/bin/rack-gateway --version"
ok "/usr/bin/rack-gateway --version: $pkg $version"
# Captured first: with pipefail, `cmd | grep -q` fails when grep exits early.
sections=$(readelf -S --wide /usr/bin/rack-gateway)
if grep -qE ' \.(symtab|debug_[a-z]+) ' <<<"$sections"; then
  fail "/usr/bin/rack-gateway has a symbol table or debug sections (not stripped)"
fi
ok "/usr/bin/rack-gateway is stripped ($(du -h /usr/bin/rack-gateway | cut -f1))"

unit=/lib/systemd/system/rack-gateway.service
verify=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify $unit: $verify"
if grep -q rack-gateway <<<"$verify"; then fail "systemd-analyze verify $unit warns: $verify"; fi
ok "systemd-analyze verify $unit"

# No secrets in the environment: `check --offline` skips what needs them
# (and says so); everything else is checked as `serve` would.
examples=/usr/share/doc/rack-gateway/examples
check_out=$(env -i PATH=/usr/bin:/bin rack-gateway check --offline "$examples/config" 2>&1) \
  || fail "rack-gateway check $examples/config: $check_out"
ok "rack-gateway check $examples/config: ${check_out#*: }"
for f in git.yaml rack-gateway.env; do
  [ -s "$examples/$f" ] || fail "$examples/$f missing"
done
ok "$examples has git.yaml and rack-gateway.env"

[ "$(man -w rack-gateway)" = /usr/share/man/man1/rack-gateway.1.gz ] || fail "man -w rack-gateway: $(man -w rack-gateway 2>&1)"
page=$(MANPAGER=cat MANWIDTH=80 man rack-gateway 2>/dev/null) || fail "man rack-gateway failed"
grep -q "Access gateway for Convox racks" <<<"$page" || fail "man rack-gateway does not render the page"
ok "man rack-gateway (/usr/share/man/man1/rack-gateway.1.gz)"

bashdir=$(pkg-config --variable=completionsdir bash-completion)
[ -s "$bashdir/rack-gateway" ] || fail "no bash completion in $bashdir"
bash -c 'source /usr/share/bash-completion/bash_completion && __load_completion rack-gateway && complete -p rack-gateway' >/dev/null \
  || fail "bash-completion does not load a completion for rack-gateway"
for f in /usr/share/zsh/vendor-completions/_rack-gateway /usr/share/fish/vendor_completions.d/rack-gateway.fish; do
  [ -s "$f" ] || fail "$f missing"
done
ok "completions: bash ($bashdir, loaded by bash-completion), zsh, fish"

[ -d /etc/rack-gateway ] && [ -d /etc/rack-gateway/credentials ] || fail "postinst did not create /etc/rack-gateway/credentials"
[ "$(stat -c %a /etc/rack-gateway/credentials)" = 700 ] || fail "/etc/rack-gateway/credentials is not mode 0700"
enabled=$(systemctl is-enabled rack-gateway.service 2>/dev/null || true)
[ "$enabled" != enabled ] || fail "the package enabled rack-gateway.service"
if [ -d /run/systemd/system ] && systemctl is-active --quiet rack-gateway.service; then
  fail "the package started rack-gateway.service"
fi
ok "/etc/rack-gateway/credentials (0700) created; service neither enabled nor started ($enabled)"

# An upgrade (or rollback) installs over the top: the same steps run again.
dpkg -i "$deb" >/dev/null 2>&1 || fail "dpkg -i over an installed $pkg"
ok "dpkg -i over the installed package (upgrade path)"

touch /etc/rack-gateway/credentials/.deb-check
dpkg -r "$pkg" >/dev/null || fail "dpkg -r $pkg"
for f in /usr/bin/rack-gateway "$unit" /usr/share/man/man1/rack-gateway.1.gz "$bashdir/rack-gateway" "$examples"; do
  [ ! -e "$f" ] || fail "dpkg -r left $f"
done
[ -e /etc/rack-gateway/credentials/.deb-check ] || fail "dpkg -r removed /etc/rack-gateway"
ok "dpkg -r removed the package and kept /etc/rack-gateway"

rm -f /etc/rack-gateway/credentials/.deb-check
dpkg --purge "$pkg" >/dev/null || fail "dpkg --purge $pkg"
trap - EXIT
ok "dpkg --purge"

echo "deb: $passed checks passed"
