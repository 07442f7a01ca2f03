# kernel-like: slotted by version, so kernels install side by side as the real
# gentoo-kernel-bin; the newest installed one boots next (`uname -r`:
# ${PV}-gentoo-dist).
EAPI=8

inherit drover-test

DESCRIPTION="drover test package gentoo-kernel-bin (reboot)"
SLOT="${PV}"

src_install() {
	local release="${PV}-gentoo-dist"
	drover-test_stamp /boot/vmlinuz-${release}
	drover-test_stamp /lib/modules/${release}/modules.dep
}
