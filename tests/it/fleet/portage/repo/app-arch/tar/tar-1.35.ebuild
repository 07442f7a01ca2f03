# A plain package: a program and its documentation, nothing to restart.
EAPI=8

inherit drover-test

DESCRIPTION="drover test package tar (plain)"
SLOT="0"

src_install() {
	exeinto /usr/bin
	newexe - tar <<<"#!/bin/sh
echo \"${CATEGORY}/${PF}\""
	drover-test_stamp /usr/share/doc/${PF}/VERSION
}
