# openssl-like: a library every server process has loaded (so its upgrade
# restarts them) and a protected configuration file (CONFIG_PROTECT=/etc).
EAPI=8

inherit drover-test

DESCRIPTION="drover test package openssl (library: restart its users)"
SLOT="0/3"

src_install() {
	drover-test_stamp /usr/lib64/libssl.so.3
	drover-test_stamp /etc/ssl/openssl.cnf
}
