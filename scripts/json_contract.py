"""Record every CLI `--json` output on a fixed memory, to diff a refactor's outputs byte for byte against a baseline.

    PYTHONPATH=$PWD python scripts/json_contract.py OUT_DIR      # one file per command under OUT_DIR
    diff -r BASELINE_DIR OUT_DIR

The memory is built from the shipped sample (four images of each label) with the default encoder. What differs
between two runs of the same code is masked (and only that): the temporary folder's path, ISO timestamps, purge ids,
salts and the digests that cover them, durations, and the process-dependent numbers of `stats` (bytes in RAM). Every
image is copied into the temporary folder first, so that the checkout's path never reaches the memory.
`search-text` is not recorded: it needs an open_clip text encoder, which the default encoder is not.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "fashion-mnist"
# keys whose values change from run to run of the same code (random salts and what digests them, clocks, RAM)
VOLATILE_KEYS = re.compile(r"salt|digest|commitment|purge_id|certificate_sha256|hash|_at$|^at$|time|seconds|"
                           r"elapsed|rss|ram|memory_bytes|per_second|throughput|pid")
ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)?")
PURGE_ID = re.compile(r"\bpurge [0-9a-f]{32}\b")  # a uuid4, in a check's detail


def mask(value, key=""):
    if isinstance(value, dict):
        return {k: mask(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [mask(v, key) for v in value]
    if VOLATILE_KEYS.search(str(key).lower()) and value is not None:
        return "<masked>"
    if isinstance(value, str):
        return PURGE_ID.sub("purge <masked>", ISO_TIME.sub("<time>", value))
    return value


def run(out: Path, name: str, *args, tmp: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-m", "vmem_core.cli", *map(str, args)], capture_output=True, text=True,
                            cwd=REPO, env=env, timeout=600)
    text = result.stdout.replace(str(tmp), "<TMP>")
    try:
        parsed = json.loads(text)
        text = json.dumps(mask(parsed), indent=1, sort_keys=True)
    except ValueError:
        parsed = None
    (out / f"{name}.json").write_text(f"exit {result.returncode}\n{text}\n")
    (out / f"{name}.stderr").write_text(result.stderr.replace(str(tmp), "<TMP>"))
    return parsed


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="vmem-contract-"))
    try:
        data = tmp / "data"
        for label in sorted(p.name for p in (SAMPLE / "memory").iterdir()):
            (data / label).mkdir(parents=True)
            for path in sorted((SAMPLE / "memory" / label).glob("*.png"))[:4]:
                shutil.copy(path, data / label / path.name)
        # copied into the temporary folder, so that no path of the checkout (its length included) reaches the memory
        shutil.copytree(SAMPLE / "queries", tmp / "queries")
        queries = sorted((tmp / "queries").rglob("*.png"))[:6]
        mem = tmp / "mem"
        run(out, "01-build", "build", data, "--memory", mem, "--json", tmp=tmp)
        run(out, "02-stats", "stats", mem, "--json", tmp=tmp)
        run(out, "03-classify", "classify", mem, *queries, "--k", "5", "--json", tmp=tmp)
        run(out, "04-classify-hard", "classify", mem, *queries, "--k", "3", "--pruning", "hard", "--json", tmp=tmp)
        run(out, "05-eval", "eval", mem, tmp / "queries", "--k-max", "10", "--json", tmp=tmp)
        run(out, "06-attribute", "attribute", mem, queries[0], "--json", tmp=tmp)
        added = run(out, "07-add", "add", mem, queries[1], "--label", "extra", "--json", tmp=tmp)
        new_id = added["ids"][0] if added else 0
        run(out, "08-delete", "delete", mem, new_id, tmp=tmp)
        run(out, "09-restore", "restore", mem, new_id, tmp=tmp)
        run(out, "10-delete-again", "delete", mem, new_id, tmp=tmp)
        run(out, "11-purge", "purge", mem, "--all", "--certificate", tmp / "cert.json", "--json", tmp=tmp)
        run(out, "12-purge-verify", "purge", "verify", tmp / "cert.json", mem, "--json", tmp=tmp)
        run(out, "13-audit", "audit", mem, "--limit", "100", "--json", tmp=tmp)
        run(out, "14-audit-verify", "audit", "verify", mem, "--json", tmp=tmp)
        run(out, "15-tune", "tune", mem, "--index-ef", "64", "--json", tmp=tmp)
        run(out, "16-migrate-exact", "migrate", mem, "--to", "exact", "--json", tmp=tmp)
        run(out, "17-classify-exact", "classify", mem, *queries, "--k", "5", "--json", tmp=tmp)
        run(out, "18-migrate-back", "migrate", mem, "--to", "hnswlib", "--json", tmp=tmp)
        run(out, "19-stats-end", "stats", mem, "--json", tmp=tmp)
        run(out, "20-bad-k", "classify", mem, queries[0], "--k", "0", "--json", tmp=tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
