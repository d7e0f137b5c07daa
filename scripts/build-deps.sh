# Sourced by scripts/test and scripts/demo: makes sure cargo and the system packages the build
# needs are present (HiGHS, the MILP packer's solver, is built from C++ source by highs-sys, which
# runs cmake and then bindgen with libclang).
if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo is required (install Rust with rustup: https://rustup.rs)" >&2
  exit 1
fi

# System packages the build needs: the MILP packer links HiGHS, built from C++ source by
# highs-sys, which runs cmake and then bindgen (libclang).
have_libclang() { ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1; }
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
have_libclang || missing+=(libclang-dev)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing system packages: ${missing[*]}" >&2
  sudo_cmd=()
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo_cmd=(sudo)
  if ! "${sudo_cmd[@]}" apt-get install -y -q "${missing[@]}" >/dev/null 2>&1; then
    "${sudo_cmd[@]}" apt-get update -q >/dev/null 2>&1 || true
    if ! "${sudo_cmd[@]}" apt-get install -y -q "${missing[@]}"; then
      echo "error: could not install ${missing[*]}; install them (Debian: apt-get install cmake libclang-dev g++) and rerun" >&2
      exit 1
    fi
  fi
fi

