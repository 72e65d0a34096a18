#!/bin/sh
# hp_patcher @VERSION@ for distributions without the .deb packages (x86_64).
# Needs, installed first: dkms, make, gcc, and your kernel's headers
# (Fedora: dnf install dkms kernel-devel; Arch: pacman -S dkms linux-headers).
#   sudo ./install.sh              install, and build the module for the running kernel
#   sudo ./install.sh --uninstall  remove everything install.sh put in place
set -eu
name=hp_patcher
version=@VERSION@
here=$(cd "$(dirname "$0")" && pwd)
prefix=/usr/local
src=/usr/src/$name-$version

if [ "$(id -u)" != 0 ]; then
	echo "install.sh: run as root" >&2
	exit 1
fi

uninstall() {
	if dkms status -m "$name" -v "$version" 2>/dev/null | grep -q .; then
		dkms remove -m "$name" -v "$version" --all
	fi
	rm -rf "$src"
	rm -f "$prefix/sbin/hpctl"
	rm -f "$prefix"/share/man/man8/hpctl.8.gz "$prefix"/share/man/man8/hpctl-*.8.gz
	rm -f "$prefix/share/bash-completion/completions/hpctl" \
		"$prefix/share/zsh/site-functions/_hpctl" \
		"$prefix/share/fish/vendor_completions.d/hpctl.fish"
}

if [ "${1:-}" = --uninstall ]; then
	uninstall
	echo "hp_patcher $version removed"
	exit 0
fi

for tool in dkms make; do
	command -v "$tool" >/dev/null 2>&1 || { echo "install.sh: $tool is not installed" >&2; exit 1; }
done
mkdir -p "$src"
cp -R "$here/src/$name-$version/." "$src/"
dkms add -m "$name" -v "$version" 2>/dev/null || true
dkms build -m "$name" -v "$version"
dkms install -m "$name" -v "$version"
install -D -m 0755 "$here/bin/hpctl" "$prefix/sbin/hpctl"
install -d "$prefix/share/man/man8"
install -m 0644 "$here"/man/man8/*.8.gz "$prefix/share/man/man8/"
install -D -m 0644 "$here/completions/hpctl.bash" "$prefix/share/bash-completion/completions/hpctl"
install -D -m 0644 "$here/completions/_hpctl" "$prefix/share/zsh/site-functions/_hpctl"
install -D -m 0644 "$here/completions/hpctl.fish" "$prefix/share/fish/vendor_completions.d/hpctl.fish"
echo "hp_patcher $version installed: modprobe hp_patcher, then hpctl --help (man hpctl)"
