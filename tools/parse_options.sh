# shellcheck shell=bash
# Command-line options for recipe scripts, in the Kaldi convention.
#
# Source this file after declaring every option variable with its default and a `help_message`:
#
#     stage=0          # first stage to run
#     use_gpu=true     # a boolean: only true or false are accepted
#     help_message="Usage: $0 [options]"
#     . tools/parse_options.sh
#
# Then `--stage 3`, `--stage=3` and `--use-gpu false` set the variables. Dashes in an option name count as
# underscores. An option whose variable was not declared, a missing value, or a non-boolean value for a variable
# whose default is true/false is an error. `--help` (or `-h`) prints $help_message and exits 0. `--config FILE`
# sources FILE (shell assignments) before the options that follow it. Parsing stops at `--` or at the first
# argument that is not an option; what is left stays in "$@". It also defines log, die and no_arguments
# (tools/log.sh).

_po_prog=$(basename "$0")

_po_fail() {
  echo "${_po_prog}: $*" >&2
  echo "${_po_prog}: run '${_po_prog} --help' to see the options" >&2
  exit 2
}

while [ $# -gt 0 ]; do
  case "$1" in
    --help | -h)
      printf '%s\n' "${help_message:-Usage: ${_po_prog} [options]}"
      printf '  %-26s%s\n' "--config FILE" "read option assignments (name=value lines) from FILE" \
        "--help" "print this message"
      exit 0
      ;;
    --)
      shift
      break
      ;;
    --*=*)
      _po_name=${1%%=*}
      _po_value=${1#*=}
      shift
      ;;
    --?*)
      _po_name=$1
      if [ $# -lt 2 ]; then
        _po_fail "option ${_po_name} needs a value"
      fi
      _po_value=$2
      case "${_po_value}" in
        --*) _po_fail "option ${_po_name} needs a value (got the option '${_po_value}')" ;;
      esac
      shift 2
      ;;
    *)
      break
      ;;
  esac

  _po_var=${_po_name#--}
  _po_var=${_po_var//-/_}
  if [ "${_po_var}" = config ]; then
    [ -f "${_po_value}" ] || _po_fail "config file not found: ${_po_value}"
    # shellcheck disable=SC1090
    . "${_po_value}"
    continue
  fi
  # Only lower-case variables declared before sourcing this file are options (not PATH, HOME, help_message...).
  if ! [[ ${_po_var} =~ ^[a-z][a-z0-9_]*$ ]] || [ "${_po_var}" = help_message ] || [ -z "${!_po_var+set}" ]; then
    _po_fail "unknown option ${_po_name}"
  fi
  _po_old=${!_po_var}
  if [ "${_po_old}" = true ] || [ "${_po_old}" = false ]; then
    if [ "${_po_value}" != true ] && [ "${_po_value}" != false ]; then
      _po_fail "option ${_po_name} takes true or false, got '${_po_value}'"
    fi
  fi
  printf -v "${_po_var}" '%s' "${_po_value}"
done

unset _po_name _po_value _po_var _po_old
unset -f _po_fail
# shellcheck source=tools/log.sh
. "$(dirname "${BASH_SOURCE[0]}")/log.sh"
