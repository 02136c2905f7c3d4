# shellcheck shell=bash
# The recipe scripts' log and error lines (run.sh, inference.sh, serve.sh): source it after tools/parse_options.sh.
#   log MSG...  a line with the time and the caller's file:line:function
#   die MSG...  "<script>: error: MSG" on stderr, exit status 2 (the toolkit's one convention for a user error)
#   no_arguments "$@"  die unless every argument was an option (the recipe scripts take options only)

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
