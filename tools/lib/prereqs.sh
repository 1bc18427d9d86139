# Shared by tools/dev and tools/test: make sure what the build and the tests
# need is installed, installing Debian packages when we can, and failing with
# a message that names what is missing when we cannot. Never skips silently.

die() {
    echo "error: $*" >&2
    exit 1
}

have() { command -v "$1" >/dev/null 2>&1; }

apt_updated=""
# ensure_deb PACKAGE CHECK-COMMAND...: installs PACKAGE unless CHECK succeeds.
ensure_deb() {
    local pkg=$1
    shift
    if "$@" >/dev/null 2>&1; then
        return 0
    fi
    have apt-get || die "$pkg is required and this machine has no apt-get: install $pkg by hand"
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        have sudo || die "$pkg is required: run 'apt-get install $pkg' as root"
        sudo="sudo"
    fi
    echo "installing $pkg (apt-get)..." >&2
    if [ -z "$apt_updated" ]; then
        $sudo apt-get update -qq || die "apt-get update failed: cannot install $pkg"
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$pkg" >/dev/null ||
        die "apt-get install $pkg failed"
    "$@" >/dev/null 2>&1 || die "$pkg was installed but the check '$*' still fails"
}

libclang_present() {
    # bindgen (for RocksDB) loads libclang itself (clang-sys), by the name
    # libclang.so, from LIBCLANG_PATH or LLVM's library directories. Other
    # libraries of LLVM (libclang-cpp.so.14 from libclang-cpp14) match a
    # looser pattern but are not what it loads, so look for exactly that file.
    local dir
    for dir in ${LIBCLANG_PATH:-} /usr/lib/llvm-*/lib /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib /usr/local/lib; do
        [ -e "$dir/libclang.so" ] && return 0
    done
    return 1
}

# ensure_pip TOOL PACKAGE: installs the Python PACKAGE (pip, user-wide when
# not root) unless TOOL runs.
ensure_pip() {
    local tool=$1 pkg=$2
    if have "$tool"; then
        return 0
    fi
    have python3 || ensure_deb python3 have python3
    python3 -m pip --version >/dev/null 2>&1 || ensure_deb python3-pip python3 -m pip --version
    echo "installing $pkg (pip)..." >&2
    python3 -m pip install -q "$pkg" 2>/dev/null ||
        python3 -m pip install -q --break-system-packages "$pkg" ||
        die "pip install $pkg failed: the S3 tests need $tool"
    hash -r
    have "$tool" || die "$pkg was installed but $tool is not on PATH (add ~/.local/bin to PATH)"
}

# ensure_py_module MODULE PACKAGE: installs PACKAGE unless python3 imports MODULE.
ensure_py_module() {
    local module=$1 pkg=$2
    have python3 || ensure_deb python3 have python3
    if python3 -c "import $module" 2>/dev/null; then
        return 0
    fi
    python3 -m pip --version >/dev/null 2>&1 || ensure_deb python3-pip python3 -m pip --version
    echo "installing $pkg (pip)..." >&2
    python3 -m pip install -q "$pkg" 2>/dev/null ||
        python3 -m pip install -q --break-system-packages "$pkg" ||
        die "pip install $pkg failed: the S3 tests need the Python module $module"
    python3 -c "import $module" || die "$pkg was installed but python3 cannot import $module"
}

# The real clients the S3 tests drive.
ensure_test_clients() {
    ensure_pip aws awscli
    ensure_py_module boto3 boto3
    have s3cmd || ensure_deb s3cmd have s3cmd
    have rclone || ensure_deb rclone have rclone
    have restic || ensure_deb restic have restic
    ensure_fuse_tools
    ensure_nbd_tools
    ensure_net_tools
    ensure_ops_tools
}

# tests/meta_group.rs cuts the meta leader off from the other replicas
# with iptables rules on loopback (as root), and checks that the rule
# really takes: a kernel without netfilter cannot run that test.
ensure_net_tools() {
    have iptables || ensure_deb iptables have iptables
    iptables -S INPUT >/dev/null 2>&1 ||
        die "iptables cannot read the INPUT chain: tests/meta_group.rs needs root and netfilter (iptables -S INPUT: $(iptables -S INPUT 2>&1 | head -1))"
}

# The admin API, console and deploy/ tests (tests/admin_api.rs,
# tests/console.rs, tests/deploy.rs, tests/prometheus_alerts.rs): curl as
# the API's client, headless Chromium with its WebDriver (chromium-driver)
# driven by Selenium, Prometheus and promtool (Debian's prometheus
# package), systemd-analyze for the units.
ensure_ops_tools() {
    have curl || ensure_deb curl have curl
    have chromium || ensure_deb chromium have chromium
    have chromedriver || ensure_deb chromium-driver have chromedriver
    ensure_py_module selenium selenium
    have promtool || ensure_deb prometheus have promtool
    have systemd-analyze || ensure_deb systemd have systemd-analyze
    # Schema checks of deploy/kubernetes (schemas ship in the package) and
    # deploy/compose (no container runtime needed).
    ensure_pip kubernetes-validate kubernetes-validate
    have docker-compose || ensure_deb docker-compose have docker-compose
}

# The FUSE mount's tests (tests/fuse*.rs) mount through the kernel's FUSE
# with fusermount3 (package fuse3) and drive the mount with rsync, tar,
# diff and cp; they need /dev/fuse, which no package can provide.
ensure_fuse_tools() {
    have fusermount3 || ensure_deb fuse3 have fusermount3
    have rsync || ensure_deb rsync have rsync
    have diff || ensure_deb diffutils have diff
    have tar || ensure_deb tar have tar
    [ -c /dev/fuse ] ||
        die "/dev/fuse is missing: the FUSE tests need the kernel's FUSE (run 'modprobe fuse'; in a container, pass --device /dev/fuse and CAP_SYS_ADMIN)"
}

# The NBD server's tests (crates/nbd/tests) drive it with libnbd's clients
# (nbdinfo, nbdcopy, nbdfuse from libnbd-bin; nbdsh from python3-libnbd,
# whose module is installed for the system Python, /usr/bin/python3),
# qemu-img (qemu-utils), fio, and e2fsprogs/util-linux for mkfs.ext4,
# fsck.ext4 and losetup on an nbdfuse file; nbdfuse needs fusermount3
# (ensure_fuse_tools).
ensure_nbd_tools() {
    have nbdinfo || ensure_deb libnbd-bin have nbdinfo
    have nbdfuse || ensure_deb libnbd-bin have nbdfuse
    /usr/bin/python3 -c "import nbd" 2>/dev/null || ensure_deb python3-libnbd /usr/bin/python3 -c "import nbd"
    have qemu-img || ensure_deb qemu-utils have qemu-img
    have fio || ensure_deb fio have fio
    have mkfs.ext4 || ensure_deb e2fsprogs have mkfs.ext4
    have losetup || ensure_deb mount have losetup
}

ensure_build_prereqs() {
    have cargo || die "cargo is required: install the Rust toolchain (https://rustup.rs), 1.95 or newer"
    have cc || ensure_deb gcc have cc
    have c++ || ensure_deb g++ have c++
    ensure_deb libclang-dev libclang_present
    # Keep the (slow to build) target directory outside the checkout so that
    # fresh clones and CI runs reuse it.
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tessera-target}"
}
