# Sourced by scripts/test and scripts/image: `karp_apt_install PACKAGE...` installs Debian packages
# quietly (as root, or through sudo when it exists), refreshing the package lists once if the
# first attempt fails; returns non-zero when they could not be installed. The caller names what
# it installs and why on stderr, and says what to run by hand when this fails.
karp_apt_install() {
  local sudo=()
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo=(sudo)
  if "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1; then
    return 0
  fi
  "${sudo[@]}" apt-get update -q >/dev/null 2>&1 || true
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
}
