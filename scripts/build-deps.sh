# Sourced by scripts/test and scripts/demo: makes sure cargo and the system packages the build
# needs are present (HiGHS, the MILP packer's solver, is built from C++ source by highs-sys, which
# runs cmake and then bindgen with libclang). Idempotent, and silent when everything is present.
#
# `KARP_DEPS_DETECT_ONLY=1` defines the detection functions without installing anything (used by
# the test in karp-operator/tests/build_deps.rs); `KARP_LIBCLANG_DIRS` overrides the directories
# searched for libclang (space-separated).
if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo is required (install Rust with rustup: https://rustup.rs)" >&2
  exit 1
fi

# The library bindgen (through clang-sys) loads: `libclang.so` or a versioned `libclang-<ver>.so`,
# in $LIBCLANG_PATH or the usual LLVM and multiarch directories. Other files share the prefix and
# must not count: `libclang-cpp.so.<ver>` (the C++ API, installed alone by some packages) is not
# what bindgen loads, and a bare `libclang.so.<n>` without the development link is not found by
# every clang-sys configuration. libclang-dev provides the unversioned link.
karp_libclang_dirs() {
  if [ -n "${KARP_LIBCLANG_DIRS:-}" ]; then
    echo "${KARP_LIBCLANG_DIRS}"
    return
  fi
  local dirs="${LIBCLANG_PATH:-}"
  local d
  for d in /usr/lib/llvm-*/lib /usr/local/lib /usr/lib/"$(uname -m)"-linux-gnu /usr/lib64 /usr/lib; do
    [ -d "$d" ] && dirs="$dirs $d"
  done
  echo "$dirs"
}

karp_have_libclang() {
  local d f base
  for d in $(karp_libclang_dirs); do
    for f in "$d"/libclang.so "$d"/libclang-*.so; do
      [ -e "$f" ] || continue
      base="${f##*/}"
      case "$base" in
        libclang.so) return 0 ;;
        # libclang-14.so, libclang-16.0.so: a version made of digits and dots only.
        libclang-*.so)
          local ver="${base#libclang-}"
          ver="${ver%.so}"
          case "$ver" in
            "" | *[!0-9.]*) ;;
            *) return 0 ;;
          esac
          ;;
      esac
    done
  done
  return 1
}

# Prints the Debian packages the build still needs, space-separated (nothing when complete).
karp_missing_packages() {
  local missing=()
  command -v cmake >/dev/null 2>&1 || missing+=(cmake)
  karp_have_libclang || missing+=(libclang-dev)
  command -v g++ >/dev/null 2>&1 || missing+=(g++)
  echo "${missing[*]}"
}

if [ "${KARP_DEPS_DETECT_ONLY:-}" != "1" ]; then
  read -r -a karp_missing <<<"$(karp_missing_packages)"
  if [ ${#karp_missing[@]} -gt 0 ]; then
    echo "installing system packages: ${karp_missing[*]}" >&2
    karp_sudo=()
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && karp_sudo=(sudo)
    if ! "${karp_sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${karp_missing[@]}" >/dev/null 2>&1; then
      "${karp_sudo[@]}" apt-get update -q >/dev/null 2>&1 || true
      if ! "${karp_sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${karp_missing[@]}" >/dev/null; then
        echo "error: could not install ${karp_missing[*]}; install them (Debian: apt-get install cmake libclang-dev g++) and rerun" >&2
        exit 1
      fi
    fi
    read -r -a karp_missing <<<"$(karp_missing_packages)"
    if [ ${#karp_missing[@]} -gt 0 ]; then
      echo "error: still missing after installing: ${karp_missing[*]} (libclang.so or libclang-<version>.so must be in /usr/lib/llvm-*/lib or \$LIBCLANG_PATH)" >&2
      exit 1
    fi
  fi
fi
