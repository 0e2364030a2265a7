# shellcheck shell=bash
# Sourced from the repository root by scripts/test and scripts/demo:
#
#     source scripts/_venv.sh; ensure_venv EXTRAS
#
# ensure_venv creates (or reuses) the virtual environment ${ROBOT_DAEMON_VENV:-.venv} with
# ${PYTHON:-python3}, installs robot-daemon[EXTRAS] into it in editable mode at the versions
# constraints.txt pins (the ones CI tests; again only when pyproject.toml or constraints.txt
# is newer than the last install of those extras) and sets $venv.
# Anything that makes this impossible ends the calling script with one line saying why.

_venv_say() { echo "scripts/${0##*/}: $*" >&2; }

# Ends the script unless $1 runs and is a Python >= 3.11 (pyproject.toml's requires-python).
_venv_require_311() {
    local version
    if ! version=$("$1" -c 'import sys; print(sys.version.split()[0])
sys.exit(sys.version_info < (3, 11))' 2>/dev/null); then
        if [ -n "$version" ]; then version="is Python $version"; else version="does not run"; fi
        _venv_say "needs Python >= 3.11: $1 $version; $2"
        exit 1
    fi
}

# Debian and Ubuntu move ensurepip into the python3-venv package, which takes root to
# install. Without it the venv is made without pip, and pip installs itself from its own
# wheel fetched from PyPI (a wheel is a zip, so Python runs pip straight from it).
_venv_bootstrap_pip() {
    local tmp wheel rc
    tmp=$(mktemp -d)
    wheel=$("$venv/bin/python" - "$tmp" "scripts/${0##*/}" <<'EOF'
import hashlib, json, sys, urllib.parse, urllib.request
index = "https://pypi.org/pypi/pip/json"
try:
    meta = json.load(urllib.request.urlopen(index, timeout=60))
    wheel = next(f for f in meta["urls"] if f["packagetype"] == "bdist_wheel")
    # Mirrors may give the file's URL relative to the JSON page's.
    url = urllib.parse.urljoin(index, wheel["url"])
    data = urllib.request.urlopen(url, timeout=60).read()
except Exception as e:  # one line, not a traceback: the caller says what to install
    sys.exit(f"{sys.argv[2]}: cannot download pip from PyPI: {e}")
if hashlib.sha256(data).hexdigest() != wheel["digests"]["sha256"]:
    sys.exit(f"{sys.argv[2]}: the pip wheel from PyPI does not match its sha256")
path = f"{sys.argv[1]}/{wheel['filename']}"
with open(path, "wb") as f:
    f.write(data)
print(path)
EOF
    ) && "$venv/bin/python" "$wheel/pip" install --quiet --no-index "$wheel"
    rc=$?
    rm -rf "$tmp"
    return "$rc"
}

# True when every package installed in $venv (but the project) is at the version
# constraints.txt pins. pip freeze and the file name the same package alike after
# normalisation (PEP 503: case, and runs of - _ . are one -).
_venv_pinned() {
    "$venv/bin/python" -m pip freeze --exclude-editable --disable-pip-version-check \
        2>/dev/null | "$venv/bin/python" -c '
import re, sys
def pins(lines):
    return {re.sub(r"[-_.]+", "-", line.strip().lower()) for line in lines
            if line.strip() and not line.lstrip().startswith("#")}
with open("constraints.txt") as f:
    sys.exit(not pins(sys.stdin) <= pins(f))'
}

ensure_venv() {
    local extras=$1 python=${PYTHON:-python3} stamp
    venv=${ROBOT_DAEMON_VENV:-.venv}

    # No pip means no venv yet, or a creation that was interrupted: (re)create it.
    if [ ! -x "$venv/bin/pip" ]; then
        _venv_require_311 "$python" "install python3.11 or newer, or set PYTHON=/path/to/python3.11"
        _venv_say "creating virtual environment $venv with $python"
        if "$python" -c 'import ensurepip' 2>/dev/null; then
            "$python" -m venv "$venv" || exit
        else
            _venv_say "$python has no ensurepip (python3-venv is not installed): fetching pip from PyPI"
            "$python" -m venv --without-pip "$venv" || exit
            _venv_bootstrap_pip || {
                _venv_say "cannot install pip into $venv; install python3-venv (sudo apt install python3-venv) and run again"
                exit 1
            }
        fi
    fi
    # A venv made earlier by another Python stays on that Python.
    _venv_require_311 "$venv/bin/python" "remove $venv and run again"

    stamp="$venv/.robot-daemon-installed-$extras"
    if [ -f "$stamp" ] && [ ! pyproject.toml -nt "$stamp" ] && [ ! constraints.txt -nt "$stamp" ]; then
        return
    fi
    # Only constraints.txt changed, and the venv already holds what it pins: nothing to do.
    if [ -f "$stamp" ] && [ ! pyproject.toml -nt "$stamp" ] && _venv_pinned; then
        touch "$stamp"
        return
    fi
    _venv_say "installing robot-daemon[$extras] into $venv (versions of constraints.txt)"
    # -qq: errors only, not the build backend's warnings (about 50 lines from setuptools).
    if ! "$venv/bin/python" -m pip install -qq --disable-pip-version-check \
            -c constraints.txt -e ".[$extras]"; then
        _venv_say "cannot install robot-daemon[$extras] into $venv (pip says why above); if" \
            "pyproject.toml's ranges exclude a version constraints.txt pins, update it:" \
            "scripts/update_constraints"
        exit 1
    fi
    touch "$stamp"
}
