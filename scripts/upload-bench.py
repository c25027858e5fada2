#!/usr/bin/env python3
"""Driver of scripts/upload-bench.sh (run it through that script): times our upload and the
azure-ai-ml SDK's on the same folder and the same Azurite, side by side, and prints the figures.

    upload-bench.py OUR_BINARY compare ROUNDS    # the 384 MiB + 1,000 files comparison
    upload-bench.py OUR_BINARY many-header       # the table header of the 9,000-file runs
    upload-bench.py OUR_BINARY ours:SECONDS      # 9,000 files, visits that stop at SECONDS
    upload-bench.py OUR_BINARY sdk               # 9,000 files through the SDK
    upload-bench.py --sdk FOLDER CONTAINER       # one SDK upload (run under /usr/bin/time)

Azurite's connection string is in AUTODEPLOY_TEST_STORAGE (scripts/with-azurite.sh exports it).
Every run uploads into a fresh container, as a pending upload would.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

BIG = 384 * 1024 * 1024
SMALL = 32 * 1024
SMALL_FILES = 1000
MANY_FILES = 9000
MANY_SIZE = 4 * 1024


def connection():
    parts = dict(p.split("=", 1) for p in os.environ["AUTODEPLOY_TEST_STORAGE"].split(";") if "=" in p)
    return parts["BlobEndpoint"].rstrip("/"), parts["AccountName"], parts["AccountKey"]


def container_sas_url(name):
    """A container created in Azurite, and its URL with an account SAS (as startPendingUpload gives)."""
    from datetime import datetime, timedelta, timezone

    from azure.storage.blob import AccountSasPermissions, BlobServiceClient, ResourceTypes, generate_account_sas

    endpoint, account, key = connection()
    sas = generate_account_sas(
        account, key, ResourceTypes(service=True, container=True, object=True),
        AccountSasPermissions(read=True, write=True, delete=True, list=True, add=True, create=True),
        datetime.now(timezone.utc) + timedelta(hours=2),
    )
    BlobServiceClient(account_url=endpoint, credential=sas).create_container(name)
    return f"{endpoint}/{name}?{sas}"


def sdk_upload(folder, container):
    """What az ml does with a pending upload's SAS: BlobStorageClient(None, sas_uri).upload(...)."""
    from azure.ai.ml._artifacts import _blob_storage_helper
    from azure.ai.ml._artifacts._blob_storage_helper import BlobStorageClient

    url = container_sas_url(container)
    sys.stderr = open(os.devnull, "w", encoding="utf-8")  # the SDK's progress output
    _blob_storage_helper.sys.stderr = sys.stderr
    began = time.monotonic()
    client = BlobStorageClient(credential=None, account_url=url)
    client.upload(folder, name=container, version="1", show_progress=False)
    print(json.dumps({"wall_s": time.monotonic() - began}))


def write_folder(root, files):
    """`files`: (relative path, size); pseudo-random content, written in 1 MiB pieces."""
    for rel, size in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            left = size
            while left:
                n = min(left, 1024 * 1024)
                f.write(os.urandom(n))
                left -= n


def timed(cmd):
    """Runs `cmd` under GNU time: its JSON line, wall seconds, and peak RSS in MiB."""
    out = subprocess.run(["/usr/bin/time", "-f", "TIME %e %M"] + cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"{cmd[0]} failed:\n{out.stdout}\n{out.stderr}")
    line = [l for l in out.stderr.splitlines() if l.startswith("TIME ")][-1].split()
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result, float(line[1]), int(line[2]) / 1024


def compare(ours, rounds):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "config" / "onlinescoring"
        write_folder(folder, [("model/weights.bin", BIG)] + [(f"lib/f{i:04}.py", SMALL) for i in range(SMALL_FILES)])
        total = BIG + SMALL * SMALL_FILES
        print(f"folder: 1 file of 384 MiB + {SMALL_FILES} files of 32 KiB = {total / 2**20:.0f} MiB; {rounds} rounds, alternating")
        rows = {"ours": [], "sdk": []}
        for r in range(rounds):
            for who in ("ours", "sdk"):
                name = f"bench-{who}-{uuid.uuid4().hex[:12]}"
                if who == "ours":
                    result, wall, rss = timed([ours, str(folder), name])
                else:
                    result, wall, rss = timed([sys.executable, __file__, "--sdk", str(folder), name])
                rows[who].append((result["wall_s"], wall, rss))
                print(f"  round {r + 1} {who:4}: upload {result['wall_s']:.2f} s (process {wall:.2f} s), peak RSS {rss:.0f} MiB")
        med = {who: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v), max(x[2] for x in v)) for who, v in rows.items()}
        # Each round's ratio, then their median: the machine's speed drifts between rounds.
        ratios = sorted(o[0] / s_[0] for o, s_ in zip(rows["ours"], rows["sdk"]))
        process = sorted(o[1] / s_[1] for o, s_ in zip(rows["ours"], rows["sdk"]))
        print()
        print("| | upload wall time (median) | process wall time (median) | peak RSS (max) |")
        print("|---|---|---|---|")
        for who, label in (("ours", "aml-autodeploy"), ("sdk", "azure-ai-ml 1.35.2")):
            u, w, m = med[who]
            print(f"| {label} | {u:.2f} s | {w:.2f} s | {m:.0f} MiB |")
        print(
            f"| ratio ours / SDK, median of the rounds' | {statistics.median(ratios):.2f}× (rounds {ratios[0]:.2f}–{ratios[-1]:.2f}×) "
            f"| {statistics.median(process):.2f}× (rounds {process[0]:.2f}–{process[-1]:.2f}×) | {med['ours'][2] / med['sdk'][2]:.2f}× |"
        )


def many(ours, who, visit):
    """9,000 small files; Azurite slows down as it holds more blobs, so each run gets its own."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "config" / "many"
        write_folder(folder, [(f"d{i // 500:02}/f{i:05}.txt", MANY_SIZE) for i in range(MANY_FILES)])
        name = f"many-{who}-{uuid.uuid4().hex[:12]}"
        if who == "sdk":
            result, wall, rss = timed([sys.executable, __file__, "--sdk", str(folder), name])
            print(f"| azure-ai-ml 1.35.2 | one call | 1 | | {result['wall_s']:.2f} s | {rss:.0f} MiB |")
        else:
            result, wall, rss = timed([ours, str(folder), name, "--visit-secs", visit])
            print(f"| aml-autodeploy | {visit} s | {result['visits']} | {result['longest_visit_s']:.2f} s | {result['wall_s']:.2f} s | {rss:.0f} MiB |")


def main():
    if sys.argv[1] == "--sdk":
        sdk_upload(sys.argv[2], sys.argv[3])
        return
    ours, part = sys.argv[1], sys.argv[2]
    if part == "compare":
        compare(ours, int(sys.argv[3]))
    elif part == "many-header":
        print()
        print(f"{MANY_FILES} files of {MANY_SIZE // 1024} KiB, each run in a fresh Azurite; a visit stops sending at its deadline:")
        print("| | visit deadline | visits | longest visit | total | peak RSS |")
        print("|---|---|---|---|---|---|")
    else:
        many(ours, part.split(":")[0], part.split(":")[1] if ":" in part else "")


if __name__ == "__main__":
    main()
