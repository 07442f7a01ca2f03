# Shared by every package of drover's test repository (tests/it/fleet/portage).
# @ECLASS: drover-test.eclass
# @SUPPORTED_EAPIS: 8
# @BLURB: binary-only test packages whose install fails or is slow on demand
# @DESCRIPTION:
# Nothing is downloaded or compiled: each package installs a few small files
# naming itself. pkg_preinst runs on the node at install time (from the binary
# package), so faults are read from the node's root ($EROOT/faults, as the
# fleet's emerge stand-in reads them):
#   faults/emerge-delay  seconds to sleep before merging
#   faults/emerge-fail   empty: every install fails; else only the listed
#                        cat/pkg-ver (PF) lines fail
# A failed pkg_preinst leaves the node's package database untouched.

case ${EAPI} in
	8) ;;
	*) die "${ECLASS}: EAPI ${EAPI} unsupported" ;;
esac

EXPORT_FUNCTIONS pkg_preinst

HOMEPAGE="https://example.invalid/drover-test"
LICENSE="MIT"
KEYWORDS="amd64"
RESTRICT="strip"
S="${WORKDIR}"

# @FUNCTION: drover-test_stamp
# @USAGE: <path>
# @DESCRIPTION:
# Installs <path> (absolute) holding "${CATEGORY}/${PF}".
drover-test_stamp() {
	insinto "${1%/*}"
	newins - "${1##*/}" <<<"${CATEGORY}/${PF}"
}

drover-test_pkg_preinst() {
	local faults="${EROOT}/faults" delay
	if [[ -r ${faults}/emerge-delay ]]; then
		read -r delay <"${faults}/emerge-delay"
		einfo "faults/emerge-delay: sleeping ${delay}s"
		sleep "${delay}" || die "bad faults/emerge-delay: ${delay}"
	fi
	if [[ -e ${faults}/emerge-fail ]]; then
		if [[ ! -s ${faults}/emerge-fail ]] || grep -qxF "${CATEGORY}/${PF}" "${faults}/emerge-fail"; then
			die "install of ${CATEGORY}/${PF} fails on purpose (${faults}/emerge-fail)"
		fi
	fi
}
