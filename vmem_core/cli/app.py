"""`vmem app` and `vmem demo`: start the Streamlit app, and the guided first run on the shipped sample."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from .common import UsageError, progress_bar


def cmd_app(args) -> int:
    from ..access import AUTH_FILE_ENV, READ_ONLY_ENV, AccessPolicy, hash_secret, is_loopback
    from ..ingest.images import MAX_UPLOAD_MEGABYTES
    from ..resources import app_script

    if getattr(args, "hash_password", False):
        print(hash_secret(_read_secret()))
        return 0
    env = dict(os.environ)
    if getattr(args, "auth_file", None):
        env[AUTH_FILE_ENV] = str(Path(args.auth_file).resolve())
    if getattr(args, "read_only", False):
        env[READ_ONLY_ENV] = "1"
    policy = AccessPolicy.from_environment(env)  # a broken auth file is reported here, not in the browser
    address = getattr(args, "address", None) or "127.0.0.1"
    if not is_loopback(address) and not policy.read_only and not policy.requires_sign_in:
        raise UsageError(f"--address {address} serves other machines, and without a sign-in anyone reaching it could "
                         "change and purge the memory: give --auth-file PATH (hashes from `vmem app --hash-password`) "
                         "or set VMEM_EDITOR_PASSWORD, or pass --read-only")
    app = app_script()
    if not app.exists():
        raise UsageError(f"the app is not installed: {app} is missing (reinstall vmem)")
    command = [sys.executable, "-m", "streamlit", "run", str(app), "--browser.gatherUsageStats", "false",
               "--client.toolbarMode", "minimal", "--server.headless", str(args.headless).lower()]
    command += ["--server.address", address]
    # the settings of .streamlit/config.toml, which streamlit reads only from the folder it is started in
    command += ["--server.maxUploadSize", str(MAX_UPLOAD_MEGABYTES)]
    if args.port:
        command += ["--server.port", str(args.port)]
    if getattr(args, "device", None):
        env["VMEM_DEVICE"] = args.device  # the app's process resolves it (vmem_core.devices)
    if args.memory:
        env["VMEM_MEMORY"] = str(Path(args.memory).resolve())
    if getattr(args, "rerank", None):
        from ..rerank import parse_spec

        parse_spec(args.rerank)  # a typo is reported here, not in the browser
        env["VMEM_RERANK"] = args.rerank
    return subprocess.call(command, env=env)


def _read_secret() -> str:
    import getpass

    secret = getpass.getpass("password or token: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    if len(secret) < 12:
        raise UsageError(f"a password or token of {len(secret)} characters is too easy to guess; use 12 or more")
    return secret


def cmd_demo(args) -> int:
    """Build the sample memory (once), then classify sample queries and evaluate on the query split."""
    from ..analysis.evaluate import evaluate_dataset
    from ..analysis.ood import judge
    from ..memory import VisualMemory
    from ..resources import default_memory, ood_dir, sample_data
    from ..sample_memory import build_sample_memory, completeness
    from ..storage.layout import is_memory

    memory_path = Path(args.memory) if args.memory else default_memory()
    samples = sample_data()
    if not is_memory(memory_path):
        print(f"building the sample memory at {memory_path} from {samples / 'memory'} ...")
        build_sample_memory(memory_path, progress=progress_bar("build"))
    else:
        print(f"the sample memory: {memory_path}")
    with VisualMemory.open(memory_path) as memory:
        shipped = completeness(memory)
        if not shipped.complete:
            print(f"warning: {shipped.explain(memory_path)}", file=sys.stderr)
        queries = sorted((samples / "queries").glob("*/*.png"))[:: 40] + sorted(ood_dir().glob("*"))
        print(f"\nclassifying {len(queries)} sample queries (true label = folder name; ood/ = photos of things the "
              "memory has never seen):")
        if len(memory) == 0:
            raise UsageError(f"{memory_path} holds no live exemplars; restore some (`vmem restore`) or remove the "
                             "folder so that the demo builds it again")
        for result in memory.classify(queries, k=args.k):
            near = result.neighbors[0]
            name = f"{Path(result.image).parent.name}/{Path(result.image).name}"
            flag = "  <- out of distribution?" if judge(memory, near.distance).is_ood else ""
            print(f"  {name:<22} -> {result.label:<11} nearest exemplar {near.id:>4} ({near.label}) "
                  f"at distance {near.distance:.3f}{flag}")
        result = evaluate_dataset(memory, samples / "queries", progress=progress_bar("eval"))
    k = min(args.k, result.k_max)
    print(f"\naccuracy on the {result.queries}-image query split at k={k}: "
          + ", ".join(f"{rule} {curve[k - 1]:.3f}" for rule, curve in result.accuracy.items()))
    print(f"more: vmem stats {memory_path} | vmem classify {memory_path} IMAGE | vmem eval {memory_path} "
          f"{samples / 'queries'}")
    if args.no_app:
        return 0
    print(f"\nstarting the app on {memory_path} (Ctrl+C to stop) ...", flush=True)
    return cmd_app(argparse.Namespace(memory=str(memory_path), port=args.port, headless=args.headless,
                                      address="127.0.0.1", device=getattr(args, "device", None)))


