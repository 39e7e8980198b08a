#!/usr/bin/env bash
# Build the classroom VM's disk image: Debian 12 made with debootstrap, then provisioned by the same
# vagrant/provision.sh the Vagrantfile runs (in a chroot, at native speed). The image is cached under
# $LABCTL_VM_CACHE (default /var/cache/labctl-vm), keyed by a hash of its inputs (this script,
# provision.sh, pyproject.toml): a second build with the same inputs takes a second.
#
#   vagrant/build-image.sh                    # build or reuse the image; prints its directory last
#   vagrant/build-image.sh --box labctl.box   # ...and export it as a Vagrant box (libvirt provider)
#   vagrant/build-image.sh --print-dir        # the directory the current inputs map to, built or not
#
# The directory holds disk.raw (ext4, whole disk, label labroot), vmlinuz and initrd.img (direct kernel
# boot), kernel-release, and ssh/id_ed25519, a key that logs in as the sudo user `vagrant`
# (which also accepts Vagrant's well-known insecure key, as every Vagrant box does).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
CACHE=${LABCTL_VM_CACHE:-/var/cache/labctl-vm}
MIRROR=${LABCTL_VM_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
DISK_SIZE=8G
# What debootstrap puts in; provision.sh adds the lab's packages. rsync: Vagrant's synced folder.
BASE_PACKAGES=linux-image-amd64,systemd-sysv,openssh-server,python3,iproute2,udev,ifupdown,isc-dhcp-client,sudo,rsync,kmod,procps,ca-certificates,e2fsprogs
# The host tools this builder and the VM test tier need (tests/test_vm.py): installed when missing.
HOST_PACKAGES=(debootstrap e2fsprogs qemu-utils qemu-system-x86 openssh-client)
# Every Vagrant box accepts this public key for `vagrant` until `vagrant up` replaces it (insert_key).
VAGRANT_INSECURE_KEY="ssh-rsa AAAAB3NzaC1yc2EAAAABIwAAAQEA6NF8iallvQVp22WDkTkyrtvp9eWW6A8YVr+kz4TjGYe7gHzIw+niNltGEFHzD8+v1I2YJ6oXevct1YeS0o9HZyN1Q9qgCgzUFtdOKLv6IedplqoPkcmF0aYet2PkEDo3MlTBckFXPITAMzF8dJSIFo9D8HfdOV0IAdx4O7PtixWKn5y2hMNG0zQPyUecp4pzC6kivAIhyfHilFR61RGL+GPXQ2MWZWFYbAGjyiYJnAmCP3NOTd0jMZEnDkbUvxhMmBYSdETk1rRgm+R4LOzFUGaHqHDLKLX+FIPKcF96hrucXzcWyLbIbEgE98OHlnVYCzRdK8jlqm8tehUc9c9WhQ== vagrant insecure public key"

BOX=""
PRINT_DIR=0
while [ $# -gt 0 ]; do
  case "$1" in
    --box) BOX=$(realpath -m "$2"); shift ;;
    --print-dir) PRINT_DIR=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "build-image.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { printf '\033[1mbuild-image:\033[0m %s\n' "$*" >&2; }
die() { printf 'build-image: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root: debootstrap and chroot need it (fix: sudo $0)"

INPUTS_HASH=$(cat "$HERE/build-image.sh" "$HERE/provision.sh" "$REPO/pyproject.toml" | sha256sum | cut -c1-16)
OUT="$CACHE/images/$INPUTS_HASH"
if [ "$PRINT_DIR" = 1 ]; then echo "$OUT"; exit 0; fi

# 1. The host's own tools.
missing=()
for pkg in "${HOST_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]} on this host"
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

mkdir -p "$CACHE/images" "$CACHE/debs" "$CACHE/pip"
exec 9>"$CACHE/.lock"
flock 9   # one build at a time; a second CI job waits and then reuses the result

export_box() {
  local img=$1 box=$2 tmp
  tmp=$(mktemp -d "$CACHE/box.XXXXXX")
  say "exporting a libvirt box to $box"
  qemu-img convert -c -O qcow2 "$img/disk.raw" "$tmp/box.img"
  cp "$img/vmlinuz" "$img/initrd.img" "$tmp/"
  printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %d}\n' "${DISK_SIZE%G}" > "$tmp/metadata.json"
  cp "$HERE/box.Vagrantfile" "$tmp/Vagrantfile"   # not an input of the image: editing it needs no rebuild
  tar -C "$tmp" -czf "$box.tmp" metadata.json Vagrantfile box.img vmlinuz initrd.img
  mv "$box.tmp" "$box"
  rm -rf "$tmp"
  say "box: $box ($(du -h "$box" | cut -f1))"
}

if [ -f "$OUT/done" ]; then
  say "image up to date: $OUT (inputs $INPUTS_HASH)"
  [ -z "$BOX" ] || export_box "$OUT" "$BOX"
  echo "$OUT"
  exit 0
fi

# 2. debootstrap into a work directory; everything mounted under it is unmounted on any exit.
WORK=$(mktemp -d "$CACHE/build.XXXXXX")
ROOT="$WORK/root"
cleanup() {
  local m
  for m in $(awk -v r="$ROOT" 'index($2, r) == 1 {print $2}' /proc/self/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
started=$SECONDS

say "debootstrap $SUITE (minbase + kernel, sshd, python3) from $MIRROR"
debootstrap --variant=minbase --include="$BASE_PACKAGES" --cache-dir="$CACHE/debs" \
  "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
  { tail -n 30 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
say "debootstrap done in $((SECONDS - started)) s"

cat > "$ROOT/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
EOF
echo labctl > "$ROOT/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 labctl\n' > "$ROOT/etc/hosts"
echo 'LABEL=labroot / ext4 defaults,errors=remount-ro 0 1' > "$ROOT/etc/fstab"
printf 'auto lo\niface lo inet loopback\n\nallow-hotplug eth0\niface eth0 inet dhcp\n' > "$ROOT/etc/network/interfaces"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# Reach PyPI the way this host does: its locally added CAs (a TLS-intercepting proxy) and /etc/pip.conf.
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
  cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
  chroot "$ROOT" update-ca-certificates >/dev/null 2>&1
fi
[ ! -f /etc/pip.conf ] || cp /etc/pip.conf "$ROOT/etc/pip.conf"
# No service starts inside the chroot (docker-registry's postinst would try).
printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"
chmod +x "$ROOT/usr/sbin/policy-rc.d"

# The Vagrant convention: user vagrant, password vagrant, passwordless sudo, the insecure key.
mkdir -p "$WORK/ssh"
ssh-keygen -q -t ed25519 -N '' -C labctl-vm-tier -f "$WORK/ssh/id_ed25519"
chroot "$ROOT" useradd --create-home --shell /bin/bash --groups sudo vagrant
echo 'vagrant:vagrant' | chroot "$ROOT" chpasswd
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' > "$ROOT/etc/sudoers.d/vagrant"
chmod 440 "$ROOT/etc/sudoers.d/vagrant"
install -d -m 700 -o 1000 -g 1000 "$ROOT/home/vagrant/.ssh"
printf '%s\n%s\n' "$VAGRANT_INSECURE_KEY" "$(cat "$WORK/ssh/id_ed25519.pub")" > "$ROOT/home/vagrant/.ssh/authorized_keys"
chown 1000:1000 "$ROOT/home/vagrant/.ssh/authorized_keys"
chmod 600 "$ROOT/home/vagrant/.ssh/authorized_keys"

# 3. The lab at /vagrant (where the Vagrantfile syncs it), provisioned in the chroot.
mount -t proc proc "$ROOT/proc"
mount -t sysfs sysfs "$ROOT/sys"
mount --rbind /dev "$ROOT/dev"
mount --make-rslave "$ROOT/dev"   # so unmounting it never reaches the host's /dev/pts
mount --bind "$CACHE/debs" "$ROOT/var/cache/apt/archives"
mkdir -p "$ROOT/root/.cache/pip"
mount --bind "$CACHE/pip" "$ROOT/root/.cache/pip"
mkdir -p "$ROOT/vagrant"
tar -C "$REPO" --exclude=./.venv --exclude=./.git --exclude='*.egg-info' --exclude=__pycache__ \
  --exclude=.pytest_cache -cf - . | tar -C "$ROOT/vagrant" -xf -
t=$SECONDS
say "provisioning the image: chroot $ROOT /vagrant/vagrant/provision.sh --jupyter-service"
proxies=$(env | grep -iE '^(https?|no)_proxy=' || true)
# shellcheck disable=SC2086
chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 $proxies \
  /vagrant/vagrant/provision.sh --jupyter-service >"$WORK/provision.log" 2>&1 ||
  { tail -n 40 "$WORK/provision.log" >&2; die "provision.sh failed in the chroot (log above)"; }
say "provisioned in $((SECONDS - t)) s"
KREL=$(basename "$(dirname "$(ls "$ROOT"/lib/modules/*/modules.dep | sort -V | tail -n 1)")")
chroot "$ROOT" test -e "/lib/modules/$KREL/build/Makefile" || die "no kernel headers for $KREL in the image"

# Boot faster and quieter: no timers that run apt or man-db a minute after boot.
chroot "$ROOT" systemctl mask apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer \
  >/dev/null 2>&1 || true
rm -f "$ROOT/usr/sbin/policy-rc.d" "$ROOT/etc/resolv.conf"
cleanup_mounts_only() {
  local m
  for m in $(awk -v r="$ROOT" 'index($2, r) == 1 {print $2}' /proc/self/mounts | sort -r); do umount -l "$m"; done
}
cleanup_mounts_only

# 4. The disk image (the whole disk is one ext4 filesystem) and the kernel to boot it with.
mkdir -p "$WORK/out"
cp -L "$ROOT/boot/vmlinuz-$KREL" "$WORK/out/vmlinuz"
cp -L "$ROOT/boot/initrd.img-$KREL" "$WORK/out/initrd.img"
echo "$KREL" > "$WORK/out/kernel-release"
mv "$WORK/ssh" "$WORK/out/ssh"
cp "$WORK/debootstrap.log" "$WORK/provision.log" "$WORK/out/"
t=$SECONDS
mkfs.ext4 -q -F -L labroot -E root_owner=0:0 -d "$ROOT" "$WORK/out/disk.raw" "$DISK_SIZE"
say "mkfs.ext4 -d in $((SECONDS - t)) s"
echo "inputs $INPUTS_HASH, kernel $KREL, built $(date -u +%FT%TZ) in $((SECONDS - started)) s" > "$WORK/out/done"
rm -rf "$OUT"
mv "$WORK/out" "$OUT"
# Keep the two newest images (a running VM may still be using the previous one as its backing file).
ls -1dt "$CACHE"/images/*/ | tail -n +3 | xargs -r rm -rf
say "image ready in $((SECONDS - started)) s: $OUT"

[ -z "$BOX" ] || export_box "$OUT" "$BOX"
echo "$OUT"
