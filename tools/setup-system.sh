#!/usr/bin/env bash
# Installs the system tools the privileged tests and the demo use, only those missing.
# As root with apt-get (Debian/Ubuntu): one `apt-get update`, one quiet install, one line
# saying what. Otherwise: one line naming what to install, and exit 0, so that the unit
# tests still run. Nothing is installed, and nothing printed, when everything is there.
# PYTHON names the interpreter that will build the venv (default python3).
set -euo pipefail

# command:package, for Debian and Ubuntu
tools=(ip:iproute2 ping:iputils-ping curl:curl iperf3:iperf3 tcpdump:tcpdump
       ethtool:ethtool setpriv:util-linux)
python=${PYTHON:-python3}

need=()
for t in "${tools[@]}"; do
  command -v "${t%%:*}" >/dev/null 2>&1 || need+=("${t#*:}")
done
# Debian's python3 has venv but not ensurepip until python3-venv is installed
if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then need+=(python3-venv); fi

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup-system: installing ${need[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    # apt's chatter is kept out of the way, and shown only if something fails
    log=$(mktemp)
    trap 'rm -f "$log"' EXIT
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"; } \
         >"$log" 2>&1; then
      cat "$log" >&2
      echo "setup-system: apt-get could not install ${need[*]}" >&2
      exit 1
    fi
  elif [ "$(id -u)" -eq 0 ]; then
    echo "setup-system: missing ${need[*]}, and no apt-get here: install them with this" \
         "system's package manager; the privileged tests and the demo need them"
  else
    echo "setup-system: missing ${need[*]}; install them as root" \
         "(Debian/Ubuntu: apt-get install ${need[*]}): the privileged tests and the demo need them"
  fi
fi

# the TUN driver: built in, or a module that may not be loaded yet
if [ ! -e /dev/net/tun ] && [ "$(id -u)" -eq 0 ]; then modprobe tun 2>/dev/null || true; fi
