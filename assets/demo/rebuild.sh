#!/usr/bin/env bash
# Rebuilds the bundled demo study (8 small grid trials on mnist-5k) from scratch.
# Usage: bash assets/demo/rebuild.sh   (from the repository root; about 2-4 minutes on 2 CPUs)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python}"
rm -rf assets/demo/studies.db assets/demo/studies.db-wal assets/demo/studies.db-shm \
  assets/demo/artifacts
AUTOML_HOME=assets/demo AUTOML_ARTIFACTS=assets/demo/artifacts "$PY" -m automl_core search \
  --dataset mnist-5k --study demo-mnist-5k --strategy grid \
  --num-conv-layers 1,2 --filters 8,16 --latent-dim 8,16 --activation relu \
  --kernel-size 3 --batch-size 64 --learning-rate 0.002 --max-epochs 8 --seed 0
# fold the WAL into the database file so one self-contained studies.db is committed
"$PY" - <<'PY'
import sqlite3
con = sqlite3.connect("assets/demo/studies.db")
con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
con.execute("PRAGMA journal_mode=DELETE")
con.execute("VACUUM")
con.close()
PY
rm -f assets/demo/studies.db-wal assets/demo/studies.db-shm
du -sh assets/demo
