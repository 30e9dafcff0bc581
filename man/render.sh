#!/bin/sh
# Renders one man page: man/NAME.SECTION.md (a small markdown, see render.awk) into roff.
# Usage: CREWSTREAMD=build/crewstreamd CREWSTREAM=build/crewstream CS_VERSION=0.1.0 \
#          sh man/render.sh man/crewstreamd.8.md build/man/crewstreamd.8
# Directive lines in the source are replaced by what the built programs print, so the pages
# cannot drift from --help:
#   @options PROGRAM   PROGRAM --help without its Usage paragraph (options, exit codes, ...)
#   @commands          one subsection per command listed by `crewstream --help`, from
#                      `crewstream COMMAND --help`
#   @defaults          `crewstreamd --check-config` with no file and an empty environment
# Needs only sh and awk (Debian's essential set) besides the programs.
set -eu
src=$1
out=$2
here=$(dirname "$0")
page=$(basename "$src" .md)
name=${page%.*}
section=${page##*.}
: "${CREWSTREAMD:?set CREWSTREAMD to the built crewstreamd}"
: "${CREWSTREAM:?set CREWSTREAM to the built crewstream}"

prog() {
  case $1 in
  crewstreamd) echo "$CREWSTREAMD" ;;
  crewstream) echo "$CREWSTREAM" ;;
  *) echo "render.sh: $src: unknown program '$1'" >&2; exit 1 ;;
  esac
}

# The command names of `crewstream --help`: the indented first words under "Commands:".
commands() {
  "$CREWSTREAM" --help | awk '/^Commands:/ { on = 1; next } on && /^$/ { exit } on && /^  [a-z]/ { print $1 }'
}

expand() {
  while IFS= read -r line || [ -n "$line" ]; do
    case $line in
    "@options "*)
      echo "@@HELP-BEGIN skipusage"
      "$(prog "${line#@options }")" --help
      echo "@@HELP-END" ;;
    "@commands")
      for c in $(commands); do
        echo "## crewstream $c"
        echo "@@HELP-BEGIN"
        "$CREWSTREAM" "$c" --help
        echo "@@HELP-END"
      done ;;
    "@defaults")
      echo '```'
      env -i "$CREWSTREAMD" --check-config
      echo '```' ;;
    "@"*) echo "render.sh: $src: unknown directive: $line" >&2; exit 1 ;;
    *) printf '%s\n' "$line" ;;
    esac
  done <"$src"
}

tmp="$out.tmp"
expand >"$tmp.in"
awk -v name="$name" -v section="$section" -v version="${CS_VERSION:-}" -v source="man/$page.md" \
  -f "$here/render.awk" "$tmp.in" >"$tmp"
rm -f "$tmp.in"
mv "$tmp" "$out"
