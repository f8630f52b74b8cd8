#!/usr/bin/env bash
# Run a pipeline job on a cluster with spark-submit (client deploy mode).
#
#   scripts/submit.sh [--master URL] [--env NAME] JOB [job args...]
#
# JOB is a file of jobs/ (bronze silver gold segment attribute audit all ...); job args are
# the `lakehouse run` options, e.g. --as-of 2026-01-03. The master comes from --master, else
# $LAKEHOUSE_MASTER, else spark.master of the config (conf/<env>.yaml, default env cluster).
# The library goes to the executors as a zip (--py-files); Delta's jars go as --jars when
# `make jars` fetched them into .jars/, else as --packages (resolved from Maven Central).
# Extra spark-submit options: $SPARK_SUBMIT_OPTS_EXTRA (word-split).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DELTA_PACKAGE="io.delta:delta-spark_4.2_2.13:4.4.1"
die() { echo "submit.sh: $*" >&2; exit 2; }

MASTER="${LAKEHOUSE_MASTER:-}"
ENV_NAME="cluster"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --master) [[ $# -ge 2 ]] || die "--master needs a URL (e.g. spark://host:7077, yarn)"; MASTER="$2"; shift 2 ;;
    --env) [[ $# -ge 2 ]] || die "--env needs a name (a file conf/NAME.yaml)"; ENV_NAME="$2"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    -*) die "unknown option $1 (options: --master URL, --env NAME; see --help)" ;;
    *) break ;;
  esac
done
[[ $# -ge 1 ]] || die "no job given (one of: $(cd "$ROOT/jobs" && ls *.py | sed 's/\.py$//' | grep -v '^__' | tr '\n' ' '))"
JOB="$1"; shift
[[ "$JOB" =~ ^[a-z_]+$ && -f "$ROOT/jobs/$JOB.py" ]] \
  || die "no job '$JOB' in jobs/ (one of: $(cd "$ROOT/jobs" && ls *.py | sed 's/\.py$//' | grep -v '^__' | tr '\n' ' '))"

if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY="$(command -v python3)"; fi
if [[ -n "${SPARK_HOME:-}" && -x "$SPARK_HOME/bin/spark-submit" ]]; then
  SUBMIT="$SPARK_HOME/bin/spark-submit"
elif [[ -x "$ROOT/.venv/bin/spark-submit" ]]; then
  SUBMIT="$ROOT/.venv/bin/spark-submit"
else
  SUBMIT="$(command -v spark-submit)" || die "spark-submit not found: run \`make setup\` or set SPARK_HOME"
fi

if [[ -z "$MASTER" ]]; then
  MASTER="$(cd "$ROOT" && "$PY" -c "from lakehouse.config import load_config; print(load_config('$ENV_NAME').get('spark.master'))")" \
    || die "cannot read conf/$ENV_NAME.yaml (see the message above)"
fi
[[ -n "$MASTER" ]] || die "no master: pass --master URL or set spark.master in conf/$ENV_NAME.yaml"

# The library as one zip for the executors' Python workers (rebuilt on every submit: cheap).
mkdir -p "$ROOT/dist"
PYFILES="$ROOT/dist/lakehouse-pyfiles.zip"
(cd "$ROOT" && "$PY" - "$PYFILES" <<'PYEOF'
import sys, zipfile
from pathlib import Path
with zipfile.ZipFile(sys.argv[1] + ".tmp", "w", zipfile.ZIP_DEFLATED) as zf:
    for package in ("lakehouse", "ml"):
        for path in sorted(Path(package).rglob("*.py")):
            zf.write(path)
Path(sys.argv[1] + ".tmp").replace(sys.argv[1])
PYEOF
)

JARS=()
shopt -s nullglob
jar_files=("$ROOT"/.jars/*.jar)
if [[ ${#jar_files[@]} -gt 0 ]]; then
  JARS=(--jars "$(IFS=,; echo "${jar_files[*]}")")
else
  JARS=(--packages "$DELTA_PACKAGE")
fi

# Driver and executors on this machine use the project's Python unless told otherwise.
export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$PY}"
export PYSPARK_DRIVER_PYTHON="${PYSPARK_DRIVER_PYTHON:-$PY}"
export LAKEHOUSE_CONF_DIR="${LAKEHOUSE_CONF_DIR:-$ROOT/conf}"

# shellcheck disable=SC2086
exec "$SUBMIT" \
  --master "$MASTER" \
  --deploy-mode client \
  --name "lakehouse-$JOB" \
  --py-files "$PYFILES" \
  "${JARS[@]}" \
  --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \
  --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog \
  --conf "spark.driver.extraJavaOptions=-Dlog4j2.configurationFile=file:$ROOT/conf/log4j2.properties -Dlakehouse.logLevel=WARN" \
  ${SPARK_SUBMIT_OPTS_EXTRA:-} \
  "$ROOT/jobs/$JOB.py" --env "$ENV_NAME" "$@"
