#!/usr/bin/env bash
# Provision a Debian 12 machine (or the classroom VM) for the lab. Idempotent: a second run changes nothing.
#
#   vagrant/provision.sh                    # packages, kernel headers, tracefs, venv, labctl on PATH, lab image
#   vagrant/provision.sh --jupyter-service  # ...and Jupyter as a systemd service on 127.0.0.1:8888 (the Vagrantfile)
#   vagrant/provision.sh --jupyter-service --jupyter-ip=10.0.2.15   # ...listening there instead (VirtualBox)
#
# The README's two commands and the Vagrantfile both run this script; so does CI (.ci/run).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$REPO/.venv"
JUPYTER_SERVICE=0
JUPYTER_IP=127.0.0.1
for arg in "$@"; do
  case "$arg" in
    --jupyter-service) JUPYTER_SERVICE=1 ;;
    --jupyter-ip=*) JUPYTER_IP=${arg#*=} ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "provision.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

# vagrant/build-image.sh runs this script inside a chroot to provision the classroom VM's disk image: there the
# kernel is the image's (not the running one) and nothing can be mounted or started, only installed and enabled.
IN_CHROOT=0
if ischroot 2>/dev/null; then IN_CHROOT=1; fi

say() { printf '\033[1mprovision:\033[0m %s\n' "$*"; }
warn() { printf '\033[33mprovision: warning:\033[0m %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  echo "provision.sh: must run as root: namespaces, mounts and packages need it (fix: sudo $0)" >&2
  exit 1
fi

# 1. Debian packages. Installed only when one is missing, so a second run does not touch apt.
PACKAGES=(
  python3 python3-venv python3-pip python3-dev     # the venv is made from Debian's python3
  python3-bpfcc bpfcc-tools libbpfcc               # bcc: eBPF programs on tracepoints (step 8)
  bpftool                                          # lists loaded BPF programs (step 8 proves detaching)
  busybox-static                                   # the embedded lab image
  iproute2 nftables iptables kmod procps psmisc    # networking (step 6), modules, ps
  docker-registry skopeo umoci                     # the lab registry and the OCI oracles (steps 4, 5)
  runc crun tini                                   # reference runtimes (steps 7, 10), init for --init
  containerd                                       # step 10: containerd drives labctl-runtime (its test starts its own)
  hyperfine apache2-utils                          # benchmarks; htpasswd for the registry tests
  python3-cryptography                             # RS256 tokens for the registry token auth (step 5)
  python3-zstandard zstd                           # zstd-compressed layers (step 5 pulls them)
  ca-certificates curl git
  strace                                           # the cgroups tests audit every write the lab makes
  python3-seccomp                                  # libseccomp's binding: the seccomp filter (step 9)
  gcc libc6-dev                                    # step 9's attacker, a static C program built on first use
  chromium chromium-driver python3-selenium        # the notebooks tested in a real browser (VM tier)
  python3-aiohttp                                  # the daemon's HTTP server (step 11)
  etcd-server etcd-client python3-etcd3            # step 13: the cluster store (etcd 3.4) and its clients
  docker.io                                        # step 11: the docker CLI as a client of the lab's daemon
)
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
APT_UPDATED=0
apt_update_once() {
  if [ "$APT_UPDATED" = 0 ]; then apt-get update -q; APT_UPDATED=1; fi
}
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt_update_once
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  say "Debian packages: all present"
fi
# containerd is started by step 10's test on a private socket and root, never as the system's service
if command -v systemctl >/dev/null && systemctl is-enabled containerd.service >/dev/null 2>&1; then
  systemctl disable containerd.service >/dev/null 2>&1 || true
  [ "$IN_CHROOT" = 1 ] || systemctl stop containerd.service >/dev/null 2>&1 || true
fi

# 1b. Step 11: the docker CLI is a client of labctl's daemon, never of dockerd: Debian's docker.io
# enables dockerd and containerd, so keep them off (the lab's tests never start them). The daemon's
# socket belongs to the group labctl: membership is root on this machine, as the group docker is.
# Disabled in the image too (build-image.sh runs this in a chroot, where systemctl edits the unit links
# offline): a dockerd started at boot sets the FORWARD policy to drop and loads br_netfilter, and the
# lab's bridge then carries nothing between containers.
if command -v systemctl >/dev/null && { [ -d /run/systemd/system ] || [ "$IN_CHROOT" = 1 ]; }; then
  for unit in docker.socket docker.service containerd.service; do
    if systemctl is-enabled -q "$unit" 2>/dev/null; then
      systemctl disable -q "$unit" && say "disabled $unit (the lab's daemon serves the docker CLI)"
    fi
    if [ "$IN_CHROOT" = 0 ] && systemctl is-active -q "$unit" 2>/dev/null; then
      systemctl stop -q "$unit" && say "stopped $unit"
    fi
  done
fi
getent group labctl >/dev/null || { groupadd --system labctl && say "created the group labctl (the daemon's socket)"; }

# 2. Kernel headers for bcc: the exact ones for the running kernel, else the distribution's, linked in.
KREL=$(uname -r)
if [ "$IN_CHROOT" = 1 ] && ls /lib/modules/*/modules.dep >/dev/null 2>&1; then
  KREL=$(basename "$(dirname "$(ls /lib/modules/*/modules.dep | sort -V | tail -n 1)")")
fi
BUILD="/lib/modules/$KREL/build"
if [ -e "$BUILD/include/linux/kconfig.h" ] || [ -e "$BUILD/Makefile" ]; then
  say "kernel headers: present for $KREL"
else
  apt_update_once
  if apt-cache show "linux-headers-$KREL" >/dev/null 2>&1; then
    say "installing linux-headers-$KREL"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "linux-headers-$KREL"
  else
    dpkg-query -W -f='${Status}' linux-headers-amd64 2>/dev/null | grep -q "install ok installed" ||
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q linux-headers-amd64
    hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1)
    common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$hdr" ]; then
      warn "no kernel headers could be installed: bcc (step 8) will not compile programs"
    else
      mkdir -p "/lib/modules/$KREL"
      ln -sfn "$hdr" "$BUILD"
      [ -n "$common" ] && ln -sfn "$common" "/lib/modules/$KREL/source"
      warn "no linux-headers package exists for kernel $KREL: linked $(basename "$hdr") instead." \
           "bcc programs on tracepoints work with them; \`labctl doctor\` reports this as a fallback."
    fi
  fi
fi

# 3. tracefs, where bcc finds tracepoints.
if [ "$IN_CHROOT" = 0 ] && [ -d /sys/kernel/tracing ] && ! mountpoint -q /sys/kernel/tracing; then
  mount -t tracefs tracefs /sys/kernel/tracing && say "mounted tracefs at /sys/kernel/tracing"
fi

# 4. The virtual environment, made from Debian's python3 so it sees bcc (a system package).
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
stamp="$VENV/.labctl-installed"
want="$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1) $REPO"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  say "installing the lab's Python package and its dependencies into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -e "$REPO"
  echo "$want" > "$stamp"
else
  say "Python environment: up to date"
fi
# Byte-compile the package once, as Debian does for packaged Python: an interpreter that may not write
# __pycache__ (PYTHONDONTWRITEBYTECODE, a read-only clone) would otherwise recompile every module on
# every `labctl` start. compileall rewrites only what is stale, so a second run changes nothing.
"$VENV/bin/python" -m compileall -q "$REPO/labctl" >/dev/null
# labctl on PATH: a launcher that starts the venv's Python without `site` (5-15 ms off every
# `labctl run`; see labctl/launcher.py). Rewritten only when its content would change.
"$VENV/bin/python" -m labctl.launcher /usr/local/bin/labctl | sed 's/^/provision: /'
# step 10: labctl's OCI runtime with runc's command line, for containerd (`ctr run --runc-binary`) and runtime-tools
"$VENV/bin/python" -m labctl.launcher /usr/local/bin/labctl-runtime | sed 's/^/provision: /'

# 4b. --userns remap (step 9): root in such a container is an unprivileged range of the host's ids,
# 100000-165535 as Docker's dockremap gets by default, named for labctl in /etc/subuid and /etc/subgid
# (subuid(5)). Appended only when labctl has no range yet: a range the admin chose is kept.
for f in /etc/subuid /etc/subgid; do
  touch "$f"
  grep -q '^labctl:' "$f" || { echo "labctl:100000:65536" >> "$f" && say "added labctl:100000:65536 to $f"; }
done

# 5. The embedded lab image(s), built locally: no internet needed.
"$VENV/bin/labctl" prepare

# 6. cgroup v2 under systemd (the classroom VM): systemd gives a login session or a service only the memory
# and pids controllers unless it delegates the subtree. Step 3 sets CPU quotas, so `vagrant ssh` sessions
# (ssh.service without logind, session-N.scope with it) get every controller: the fix the lab's own
# error message names, Delegate=yes. They take effect from the next login.
if [ -f /sys/fs/cgroup/cgroup.controllers ] || [ "$IN_CHROOT" = 1 ]; then
  if [ -d /run/systemd/system ] || [ "$IN_CHROOT" = 1 ]; then
    changed=0
    for dropin in "ssh.service.d:Service" "session-.scope.d:Scope"; do
      dir="/etc/systemd/system/${dropin%%:*}"
      content="[${dropin##*:}]
Delegate=yes
"
      if ! printf '%s' "$content" | cmp -s - "$dir/labctl-delegate.conf"; then   # $(cat) would drop the newline
        mkdir -p "$dir" && printf '%s' "$content" > "$dir/labctl-delegate.conf" && changed=1
      fi
    done
    if [ "$changed" = 1 ]; then
      [ "$IN_CHROOT" = 1 ] || systemctl daemon-reload
      say "cgroup v2: controllers delegated to ssh sessions (from the next login)"
    fi
  fi
fi

# 7. Jupyter as a service (the classroom VM). It runs as root (the notebooks make namespaces and cgroups), so
# whoever reaches its port with its token runs code as root in the VM:
# - The token is this VM's own: `labctl jupyter serve` (labctl/jupyter.py) makes /etc/labctl/jupyter-token
#   (192 random bits, mode 0600) on the service's first start, the VM's first boot, and Jupyter reads it
#   from $JUPYTER_TOKEN_FILE, never from its command line. No token is made here: build-image.sh runs this
#   script in a chroot, and a token made there would be the same in every VM of the box.
# - Jupyter listens on one address, where the forwarded port arrives (the Vagrantfile's guest_ip), never on
#   0.0.0.0: 127.0.0.1 by default, since vagrant-libvirt forwards through an ssh tunnel (`ssh -L
#   127.0.0.1:8888:127.0.0.1:8888`) whose far end is the guest's own sshd; VirtualBox's NAT engine
#   delivers the port to the guest's NAT interface instead, so its Vagrantfile override gives
#   --jupyter-ip=10.0.2.15 (that interface's address, which VirtualBox's DHCP always hands out).
# `sudo labctl jupyter url` prints the URL with the token; `vagrant up` shows it at the end.
if [ "$JUPYTER_SERVICE" = 1 ]; then
  case "$JUPYTER_IP" in
    ""|0.0.0.0|::|"[::]")
      echo "provision.sh: --jupyter-ip=$JUPYTER_IP means every interface (fix: the address the forwarded port" \
           "arrives at: 127.0.0.1 for vagrant-libvirt, 10.0.2.15 for VirtualBox)" >&2
      exit 2 ;;
  esac
  unit=/etc/systemd/system/labctl-jupyter.service
  content="[Unit]
Description=Jupyter for the kernel-primitives lab (sudo labctl jupyter url: its URL and token)
After=network.target

[Service]
ExecStart=$VENV/bin/labctl jupyter serve --ip=$JUPYTER_IP --port=8888 --notebook-dir=$REPO/notebooks
Restart=on-failure
# The notebooks create cgroups (step 3): systemd hands this service's cgroup and its controllers over.
Delegate=yes

[Install]
WantedBy=multi-user.target
"
  changed=0
  if ! printf '%s' "$content" | cmp -s - "$unit"; then
    printf '%s' "$content" > "$unit"
    changed=1
    [ "$IN_CHROOT" = 1 ] || systemctl daemon-reload
  fi
  if [ "$IN_CHROOT" = 1 ]; then
    systemctl enable labctl-jupyter.service >/dev/null 2>&1   # starts when the image boots
    say "Jupyter: enabled; it makes this VM's token on the first boot (\`sudo labctl jupyter url\` prints it)"
  else
    systemctl enable labctl-jupyter.service >/dev/null 2>&1
    # A changed unit (another address, the old fixed token) takes effect now, not at the next boot.
    if [ "$changed" = 1 ]; then systemctl restart labctl-jupyter.service; else systemctl start labctl-jupyter.service; fi
    say "Jupyter runs in the VM on $JUPYTER_IP:8888 (forwarded to 127.0.0.1:8888 on your computer);" \
        "\`sudo labctl jupyter url\` prints the URL with this VM's token"
  fi
fi
say "done. Next: \`labctl doctor\`, then \`labctl tour\`."
