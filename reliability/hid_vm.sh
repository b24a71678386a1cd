#!/usr/bin/env bash
# The real HID path, in a VM: tests/drivers/test_hid_scanner.py with /dev/uinput.
#
# The machines this project builds on have no /dev/uinput, so the tests that
# type on a virtual keyboard (evdev grab, reads, unplug/replug) are skipped
# there. This boots Debian's own kernel under QEMU with virtme-ng, over this
# machine's filesystem (read-only; the project's .venv included), loads uinput
# and evdev (there is no udev inside to load evdev), and runs that test file
# with the skip lifted. It fails if any test there fails or is skipped.
#
# Once, into the cache ($GATED_VM_CACHE, default ~/.cache/gated-vm; outside
# the repo): virtme-ng from PyPI in its own venv, and the kernel package that
# linux-image-amd64 currently depends on (apt-get download, dpkg -x, depmod).
# Needs on the host: apt-get install --no-install-recommends qemu-system-x86
# busybox-static kmod. KVM is not used (--disable-kvm): QEMU emulates the CPU.
#
# Exit status: 0 passed, 1 a test failed or the VM did not finish, 2 setup.
set -euo pipefail
PATH=$PATH:/usr/sbin:/sbin  # depmod, modprobe
cd "$(dirname "$0")/.."
repo=$PWD

cache=${GATED_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gated-vm}
virtme_version=1.42
vm_timeout=${GATED_VM_TIMEOUT:-600}
test_file=tests/drivers/test_hid_scanner.py

say() { echo "hid-vm: $*"; }
die() { echo "hid-vm: $*" >&2; exit 2; }
now() { date +%s.%N; }
seconds() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

started=$(now)
[ -x .venv/bin/python ] || die "no .venv in $repo: run make test first"
missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v busybox >/dev/null || missing+=(busybox-static)
command -v depmod >/dev/null && command -v modprobe >/dev/null || missing+=(kmod)
command -v apt-get >/dev/null && command -v dpkg >/dev/null || die "needs apt-get and dpkg (a Debian host)"
[ ${#missing[@]} -eq 0 ] || die "missing on this host: apt-get install --no-install-recommends ${missing[*]}"

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9  # one setup at a time; several worktrees may share the cache

venv=$cache/virtme-ng-$virtme_version
if [ ! -x "$venv/bin/vng" ]; then
    say "installing virtme-ng $virtme_version into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet "virtme-ng==$virtme_version" \
        || die "pip could not install virtme-ng==$virtme_version"
fi

# The kernel linux-image-amd64 depends on today (Debian retires old ABIs from
# the archive); a cached one serves when apt knows none (no apt-get update).
kernel_pkg=${GATED_VM_KERNEL_PKG:-$(apt-cache depends linux-image-amd64 2>/dev/null \
    | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')}
if [ -z "$kernel_pkg" ]; then
    kernel_pkg=$(cd "$cache" && ls -d linux-image-* 2>/dev/null | sort -V | tail -n 1) \
        || die "apt-cache knows no linux-image-amd64 and none is cached: run apt-get update"
fi
kernel_root=$cache/$kernel_pkg
if [ ! -d "$kernel_root" ]; then
    say "downloading $kernel_pkg into $cache"
    staging=$(mktemp -d "$cache/.download.XXXXXX")
    trap 'rm -rf "$staging"' EXIT  # an interrupted download leaves nothing half-made
    (cd "$staging" && apt-get download "$kernel_pkg" >download.log 2>&1) \
        || { cat "$staging/download.log" >&2; die "apt-get download $kernel_pkg failed"; }
    dpkg -x "$staging"/"$kernel_pkg"_*.deb "$staging/root"
    version=${kernel_pkg#linux-image-}
    depmod -b "$staging/root" "$version"  # the .deb leaves modules.dep to its postinst
    mv -T "$staging/root" "$kernel_root"
    rm -rf "$staging"
    trap - EXIT
fi
kernel_image=$(ls "$kernel_root"/boot/vmlinuz-* 2>/dev/null | head -n 1)
[ -n "$kernel_image" ] || die "no boot/vmlinuz-* in $kernel_root"
exec 9>&-  # setup done: release the lock
ready=$(now)

results=$(mktemp -d "$cache/run.XXXXXX")
cat >"$results/guest.sh" <<EOF
cd '$repo'
date +%s.%N >'$results/test-started'
if modprobe uinput && modprobe evdev; then
    # The root is read-only: no bytecode, no cache. No hypothesis plugin
    # either: that file does not use it, and importing it is most of the
    # start-up an emulated CPU pays for.
    PYTHONDONTWRITEBYTECODE=1 .venv/bin/python -m pytest -p no:cacheprovider -p no:hypothesispytest \
        -q -rA $test_file >'$results/pytest.log' 2>&1
    echo \$? >'$results/rc'
else
    echo 'modprobe uinput evdev failed in the VM' >'$results/pytest.log'
    echo 3 >'$results/rc'
fi
date +%s.%N >'$results/test-ended'
EOF

say "booting $(basename "$kernel_image") (emulated CPU, no KVM); log in $results/vm.log"
vm_status=0
PATH="$venv/bin:$PATH" timeout "$vm_timeout" vng --run "$kernel_image" \
    --disable-kvm --force-9p --user root --verbose \
    --cwd "$repo" --rwdir "$results" --exec "sh '$results/guest.sh'" \
    >"$results/vm.log" 2>&1 </dev/null || vm_status=$?
finished=$(now)

if [ ! -f "$results/rc" ]; then
    tail -n 40 "$results/vm.log" >&2
    echo "hid-vm: FAILED: the VM did not run the tests to the end (status $vm_status; log kept in $results)" >&2
    exit 1
fi
cat "$results/pytest.log"
test_time=$(seconds "$(cat "$results/test-started")" "$(cat "$results/test-ended")")
vm_time=$(seconds "$ready" "$finished")
timing="kernel and tools ready in $(seconds "$started" "$ready") s; VM $vm_time s, of which the test run $test_time s"

rc=$(cat "$results/rc")
real_passed=$(grep -c "^PASSED $test_file::test_a_real" "$results/pytest.log" || true)
if [ "$rc" != 0 ] || grep -q '^SKIPPED' "$results/pytest.log" || [ "$real_passed" -lt 1 ]; then
    echo "hid-vm: FAILED (pytest status $rc, real-device tests passed: $real_passed; logs kept in $results); $timing" >&2
    exit 1
fi
rm -rf "$results"
say "passed: $real_passed real-device tests on /dev/uinput, none skipped; $timing"
