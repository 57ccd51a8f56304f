#!/usr/bin/env bash
# Create (or reuse) a separate virtual environment with a MONAI Label server that can serve the exported
# ideal_finetune bundle. MONAI Label needs its own torch/torchvision pair (torchvision must match the torch build),
# so it never goes into the project's own environment.
#
#   bash scripts/monailabel_venv.sh            # prints the venv folder on stdout (log lines go to stderr)
#   "$(bash scripts/monailabel_venv.sh)/bin/monailabel" start_server ...
#
# Environment:
#   IDEAL_MONAILABEL_VENV         venv folder (default ${XDG_CACHE_HOME:-~/.cache}/ideal-monai/monailabel-venv).
#                                 A prebuilt venv there in which monailabel imports is reused as it is.
#   IDEAL_MONAILABEL_PYTHON       interpreter that creates the venv (default python3; 3.9-3.12)
#   IDEAL_MONAILABEL_TORCH_INDEX  auto (default): use the PyTorch CPU wheel index when it is reachable (a few hundred
#                                 MB instead of the CUDA wheels and their nvidia-* libraries, ~8 GB); none: PyPI only;
#                                 or an index URL.
#
# Idempotent: a finished install writes a stamp with the requirement list; a rerun with the same list only checks
# that the packages import. An interrupted install is redone from scratch. Concurrent runs wait on a lock.
set -euo pipefail

VENV="${IDEAL_MONAILABEL_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ideal-monai/monailabel-venv}"
PY="${IDEAL_MONAILABEL_PYTHON:-python3}"
TORCH_INDEX="${IDEAL_MONAILABEL_TORCH_INDEX:-auto}"
CPU_INDEX="https://download.pytorch.org/whl/cpu"

# the versions known to work together (pydicom 3 / pynetdicom 3 / dicomweb-client 0.60 break monailabel 0.8.5)
TORCH_REQS=("torch==2.14.1" "torchvision==0.29.1")
ML_REQS=("monai==1.6.1" "monailabel==0.8.5" "pydicom<3" "pynetdicom<3" "dicomweb-client<0.60")
STAMP_TEXT="ideal-monailabel-venv v1: ${TORCH_REQS[*]} ${ML_REQS[*]}"
STAMP="$VENV/.ideal-monailabel-stamp"
MARKER="$VENV/.ideal-monailabel-installing"
CHECK='import importlib.metadata as m, monailabel, monai, torch, torchvision, numpy; from monailabel.tasks.infer.bundle import BundleInferTask; print(" ".join(f"{p}={m.version(p)}" for p in ("monailabel", "monai", "torch", "torchvision", "numpy")))'

log() { printf '[monailabel-venv %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
if ! command -v flock >/dev/null; then
    log "flock not found: no lock against a concurrent install"
elif ! flock -n 9; then
    log "another install holds $VENV.lock; waiting"
    flock 9
fi

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$STAMP_TEXT" ]] && versions=$("$VENV/bin/python" -c "$CHECK" 2>/dev/null); then
    log "reusing $VENV ($versions)"
    echo "$VENV"
    exit 0
fi
if [[ -x "$VENV/bin/python" && ! -f "$MARKER" && ! -f "$STAMP" ]] && versions=$("$VENV/bin/python" -c "$CHECK" 2>/dev/null); then
    log "reusing prebuilt $VENV, not installed by this script ($versions)"
    echo "$VENV"
    exit 0
fi
if [[ -e "$VENV" && -n "$(ls -A "$VENV" 2>/dev/null)" && ! -f "$MARKER" && ! -f "$STAMP" \
      && "$VENV" != "${XDG_CACHE_HOME:-$HOME/.cache}/ideal-monai/monailabel-venv" ]]; then
    log "error: $VENV exists, is not a venv made by this script and monailabel does not import there; remove it or" \
        "point IDEAL_MONAILABEL_VENV elsewhere"
    exit 1
fi

start=$(date +%s)
log "creating $VENV with $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
"$PY" -m venv --clear "$VENV"
touch "$MARKER"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

index_args=()
case "$TORCH_INDEX" in
    none) log "torch from PyPI (CUDA build with nvidia-* wheels, ~8 GB)" ;;
    auto)
        if "$PY" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/torch/', timeout=10)" \
                "$CPU_INDEX" >/dev/null 2>&1; then
            index_args=(--extra-index-url "$CPU_INDEX")
            log "torch CPU wheels from $CPU_INDEX"
        else
            log "$CPU_INDEX not reachable: torch from PyPI (CUDA build with nvidia-* wheels, ~8 GB)"
        fi ;;
    *) index_args=(--extra-index-url "$TORCH_INDEX"); log "torch from $TORCH_INDEX" ;;
esac

log "step 1/2: pip install ${TORCH_REQS[*]} setuptools wheel"
"${PIP[@]}" install "${index_args[@]}" "${TORCH_REQS[@]}" setuptools wheel >&2
# sam2 (a monailabel dependency, unused here: the server runs with --conf sam2 false) is an sdist whose isolated build
# would download a second torch; build it against the torch above, without its optional CUDA extension
log "step 2/2: pip install ${ML_REQS[*]} (sam2 built without isolation, SAM2_BUILD_CUDA=0)"
SAM2_BUILD_CUDA=0 "${PIP[@]}" install --no-build-isolation "${index_args[@]}" "${TORCH_REQS[@]}" "${ML_REQS[@]}" >&2

versions=$("$VENV/bin/python" -c "$CHECK")
rm -f "$MARKER"
echo "$STAMP_TEXT" > "$STAMP"
log "installed in $(( $(date +%s) - start )) s, $(du -sh "$VENV" | cut -f1): $versions"
echo "$VENV"
