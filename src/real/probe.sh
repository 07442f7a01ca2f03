# drover's node probe: the whole state of a node in one round trip.
# Run as `sh -c "$PROBE" drover-probe`; plain POSIX sh, builtins only apart from
# the two `cd -P` subshells, no arguments, nothing written. Paths are under
# $NODE_ROOT when set (the test fleet), else under /.
# Output: one `key value` line per fact, `end` last (a truncated answer is an error).
R=${NODE_ROOT:-}
echo "drover-probe 1"
echo "root $R"
if read -r v <"$R/proc/sys/kernel/random/boot_id"; then echo "boot $v"; fi
if read -r v <"$R/proc/sys/kernel/osrelease"; then echo "kernel $v"; fi
for d in "$R"/var/db/pkg/*/*; do
  [ -d "$d" ] || continue
  p=${d#"$R/var/db/pkg/"}
  case $p in
  */-MERGING-*) echo "merging $p" ;;
  *) echo "pkg $p" ;;
  esac
done
for f in "$R"/var/cache/binpkgs/*/*.tbz2 "$R"/var/cache/binpkgs/*/*.gpkg.tar "$R"/var/cache/binpkgs/*/*/*.gpkg.tar "$R"/var/cache/binpkgs/*/*/*.xpak; do
  [ -f "$f" ] && echo "binpkg ${f#"$R/var/cache/binpkgs/"}"
done
for d in "$R"/opt/php/*; do
  [ -d "$d" ] && [ ! -L "$d" ] && echo "php ${d##*/}"
done
if [ -L "$R/opt/php/current" ]; then echo "php-active $(cd -P "$R/opt/php/current" 2>/dev/null && pwd)"; fi
for d in "$R"/srv/app/releases/*; do
  [ -d "$d" ] && [ ! -L "$d" ] && echo "release ${d##*/}"
done
if [ -L "$R/srv/app/current" ]; then echo "release-active $(cd -P "$R/srv/app/current" 2>/dev/null && pwd)"; fi
echo end
