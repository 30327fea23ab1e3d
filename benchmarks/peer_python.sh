# Sourced by the peer benchmarks: sets $python to an interpreter that imports the given
# modules: $PYTHON if it does, else build/venv-peers, made and filled from PyPI once.
#   peer_python <import names> -- <pip packages>
peer_python() {
  local imports=() packages=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do imports+=("$1"); shift; done
  shift
  packages=("$@")
  local check="import $(IFS=,; echo "${imports[*]}")"
  python=${PYTHON:-}
  if [ -z "$python" ] || ! "$python" -c "$check" 2>/dev/null; then
    python=build/venv-peers/bin/python
    if ! "$python" -c "$check" 2>/dev/null; then
      echo "$(basename "$0"): installing ${packages[*]} into build/venv-peers (once)" >&2
      python3 -m venv build/venv-peers
      build/venv-peers/bin/pip install -q "${packages[@]}"
    fi
  fi
}
