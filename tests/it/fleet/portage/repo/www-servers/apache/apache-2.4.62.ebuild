# A web server: its upgrade restarts apache2 (the fleet spec's disruptive rules).
EAPI=8

inherit drover-test

DESCRIPTION="drover test package apache (restart on upgrade)"
SLOT="2"

src_install() {
	drover-test_stamp /usr/sbin/.apache2-version
	drover-test_stamp /etc/apache2/httpd.conf
}
