#!/bin/bash
# Run every command line of README.md's "Command line" block, as written, in a scratch folder that
# holds what they name (an image folder, my_model.py, a local Llama folder, a text file, the
# example recipes). One line per command: exit status, seconds, the command. Slow (tens of minutes:
# the README trains real models); run by hand: `sh scripts/run_readme_commands.sh [DIR]`.
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${1:-$(mktemp -d)}"
mkdir -p "$DIR" && cd "$DIR" || exit 1
export PATH="$ROOT/.venv/bin:$PATH"
cp -r "$ROOT/recipes" .
python - <<PY
import sys; sys.path.insert(0, "$ROOT/tests/acceptance")
from pathlib import Path
from _acceptance_fixtures import write_image_folder, write_model_file, write_text_file, write_tiny_causal_lm
write_image_folder(Path("images"), per_class=30)
corpus = write_text_file(Path("corpus.txt"))
write_tiny_causal_lm(Path("my-llama"), corpus, architecture="llama")
write_model_file(Path("my_model.py"))
PY
sed -n '/## Command line/,/^## /p' "$ROOT/README.md" | sed -n '/^```sh/,/^```/p' | grep -v '^```' \
  | sed 's/ \+# .*$//' > commands.txt
failed=0
while IFS= read -r line; do
  [ -z "$line" ] && continue
  start=$(date +%s)
  bash -c "$line" > "log.$(echo "$line" | md5sum | cut -c1-6)" 2>&1 < /dev/null
  rc=$?
  [ "$rc" -ne 0 ] && failed=1
  echo "rc=$rc $(( $(date +%s) - start ))s  $line"
done < commands.txt
echo "logs in $DIR"
exit $failed
