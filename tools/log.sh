# shellcheck shell=bash
# The recipe scripts' log and error lines (run.sh, inference.sh, serve.sh): source it after tools/parse_options.sh.
#   log MSG...  a line with the time and the caller's file:line:function
#   die MSG...  "<script>: error: MSG" on stderr, exit status 2 (the toolkit's one convention for a user error)
#   no_arguments "$@"  die unless every argument was an option (the recipe scripts take options only)
#   has_file DIR FIND-TESTS...  true when find finds a file below DIR passing the tests (e.g. -maxdepth 1 -name
#               '*.wav'); unlike a glob, a DIR whose name holds * ? or [ is taken as it is

log() {
  local fname=${BASH_SOURCE[1]##*/}
  echo -e "$(date '+%Y-%m-%d %H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

die() {
  echo "$(basename "$0"): error: $*" >&2
  exit 2
}

no_arguments() {
  [ $# -eq 0 ] || die "unexpected argument '$1' (options are --name value; see --help)"
}

has_file() {
  local dir=$1
  shift
  [ -d "${dir}" ] && find "${dir}" "$@" -type f -print -quit 2>/dev/null | grep -q .
}
