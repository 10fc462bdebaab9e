#!/usr/bin/env bash
# Validate, test and plan the pipeline specs a pull request changes.
#
# Usage: ci/sluice-ci.sh [BASE_REF]
#   BASE_REF   what the change is compared with (default: $SLUICE_BASE_REF, else origin/main).
# Environment:
#   SLUICE            the sluice binary (default: sluice on PATH)
#   SLUICE_SPEC_DIRS  space-separated folders holding specs (default: pipelines)
#   SLUICE_ALL=1      check every spec, not just the changed ones
#   GITHUB_ACTIONS    when "true", diagnostics become workflow annotations and plans go to the
#                     job summary ($GITHUB_STEP_SUMMARY) as Mermaid diagrams
# Exit status: 0 when every changed spec is valid (and its tests pass), 1 otherwise, 2 on
# usage or setup errors.
set -uo pipefail

sluice=${SLUICE:-sluice}
base=${1:-${SLUICE_BASE_REF:-origin/main}}
dirs=${SLUICE_SPEC_DIRS:-pipelines}

if ! command -v "$sluice" >/dev/null 2>&1; then
  echo "sluice-ci: cannot find the sluice binary ($sluice); set SLUICE" >&2
  exit 2
fi

specs=()
if [ "${SLUICE_ALL:-0}" = 1 ]; then
  while IFS= read -r f; do specs+=("$f"); done < <(
    for d in $dirs; do [ -d "$d" ] && find "$d" -type f \( -name '*.yaml' -o -name '*.yml' -o -name '*.toml' \); done | sort)
else
  if ! git rev-parse --verify --quiet "$base^{commit}" >/dev/null; then
    echo "sluice-ci: base $base is not a commit here (fetch it, e.g. actions/checkout with fetch-depth: 0)" >&2
    exit 2
  fi
  merge_base=$(git merge-base "$base" HEAD) || { echo "sluice-ci: no merge base with $base" >&2; exit 2; }
  while IFS= read -r f; do
    case "$f" in *.yaml|*.yml|*.toml) ;; *) continue ;; esac
    for d in $dirs; do
      case "$f" in "${d%/}"/*) [ -f "$f" ] && specs+=("$f") ;; esac
    done
  done < <(git diff --name-only --diff-filter=ACMR "$merge_base" -- $dirs; git ls-files --others --exclude-standard -- $dirs)
fi

if [ ${#specs[@]} -eq 0 ]; then
  echo "sluice-ci: no pipeline specs changed"
  exit 0
fi

format=human
[ "${GITHUB_ACTIONS:-}" = true ] && format=github
summary=${GITHUB_STEP_SUMMARY:-/dev/null}

echo "sluice-ci: checking ${#specs[@]} spec(s): ${specs[*]}"
status=0
"$sluice" validate --format "$format" "${specs[@]}" || status=1

# `sluice test` runs the specs' examples once this sluice has it.
has_test=0
"$sluice" test --help >/dev/null 2>&1 && has_test=1

for spec in "${specs[@]}"; do
  if ! "$sluice" validate --format json "$spec" >/dev/null 2>&1; then
    continue
  fi
  if [ $has_test = 1 ]; then
    "$sluice" test "$spec" || status=1
  fi
  echo "── plan of $spec"
  "$sluice" plan "$spec" || status=1
  {
    echo "### \`$spec\`"
    echo '```mermaid'
    "$sluice" plan --format mermaid "$spec"
    echo '```'
  } >> "$summary" 2>/dev/null
done
exit $status
