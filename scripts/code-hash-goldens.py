#!/usr/bin/env python3
"""Golden vectors for src/deployment/assets/code.rs, computed by the real Azure ML SDK.

For every case folder tests/fixtures/code-folders/<case>/ this writes
tests/fixtures/code-folders/<case>.golden.json with what azure-ai-ml 1.35.2 computes for a
local `code_configuration.code` folder:

    {"sdk": "azure-ai-ml 1.35.2", "folder_name": ..., "hash": ...,
     "files": [{"path": ..., "size": ...}, ...],   # in the order the content hash reads them
     "blob_names": [...],                          # in the order the SDK submits the uploads
     "indicator_blob": ...}                        # the blob that gets upload_status=completed

or {"refused": "<SDK message>", "sdk_exception": "<class>"} when the SDK refuses the folder;
and tests/fixtures/gitwildmatch-vectors.json, what the SDK's vendored pathspec
GitWildMatchPattern makes of a list of ignore-file lines against a list of paths.

Only the SDK's own functions compute the values: get_ignore_file, get_content_hash,
get_upload_files_from_folder, get_object_hash, and BlobStorageClient.upload (which runs
get_directory_size and upload_directory). The storage account is a fake in-process container
client that records the uploads; nothing leaves the machine. Upload workers are limited to one
so that the recorded order is the order the SDK submits the files in.

Usage (from the repository root):
    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install azure-ai-ml==1.35.2
    /tmp/venv/bin/python scripts/code-hash-goldens.py
"""

import json
import os
import sys
from pathlib import Path

import azure.ai.ml
from azure.ai.ml._artifacts import _blob_storage_helper
from azure.ai.ml._artifacts._blob_storage_helper import BlobStorageClient
from azure.ai.ml._utils import _asset_utils
from azure.ai.ml._utils._pathspec import GitWildMatchPattern
from azure.ai.ml._utils._asset_utils import (
    get_content_hash,
    get_ignore_file,
    get_object_hash,
    get_upload_files_from_folder,
)
from azure.core.exceptions import ResourceNotFoundError

SDK_VERSION = "1.35.2"
if azure.ai.ml.__version__ != SDK_VERSION:
    sys.exit(f"azure-ai-ml {SDK_VERSION} is required, found {azure.ai.ml.__version__}")

ROOT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "code-folders"

# One upload worker, so that the recorded order is the submission order (the SDK uses
# cpu_count() * 2 threads; only the order in which they finish would differ).
_asset_utils.cpu_count = lambda: 1
_asset_utils.PROCESSES_PER_CORE = 1


class FakeBlob:
    """A blob that does not exist yet; records metadata writes."""

    def __init__(self, container, name):
        self.container = container
        self.name = name

    def get_blob_properties(self):
        self.container.property_reads.append(self.name)
        error = ResourceNotFoundError("fake: no such blob")
        error.error_code = "BlobNotFound"  # what the storage service answers; the SDK reads it
        raise error

    def set_blob_metadata(self, metadata):
        self.container.metadata[self.name] = dict(metadata)


class FakeContainer:
    """Records what the SDK uploads instead of sending it to Azure Storage."""

    def __init__(self):
        self.uploads = []
        self.metadata = {}
        self.property_reads = []

    def upload_blob(self, name, data, **_kwargs):
        data.read()
        self.uploads.append(name)

    def get_blob_client(self, blob):
        return FakeBlob(self, blob)


def scrub(message):
    """Replaces this machine's fixture path in an SDK message, so the golden is portable."""
    return str(message).replace(str(ROOT), "<fixtures>")


def golden(case):
    # The SDK resolves a relative code path against the YAML's folder (Path(...).resolve()).
    path = case.resolve()
    try:
        ignore_file = get_ignore_file(path)
        content_hash = get_content_hash(path, ignore_file)
        pairs = get_upload_files_from_folder(path, ignore_file=ignore_file)
        # The order _get_file_list_content_hash reads the files in.
        ordered = sorted(pairs, key=lambda x: str(x[1]).lower())
        files = [{"path": rel, "size": os.path.getsize(local)} for local, rel in ordered]

        # What _upload_to_datastore does before uploading (its result only names the
        # LocalUpload/<hash> folder, which a SAS upload does not use).
        get_object_hash(path, ignore_file)

        client = BlobStorageClient(
            credential=None,
            account_url="https://fakeaccount.blob.core.windows.net/fakecontainer?sv=fake&sig=fake",
        )
        container = FakeContainer()
        client.container_client = container
        info = client.upload(
            str(path), name="00000000-0000-4000-8000-000000000000", version="1", ignore_file=ignore_file,
            show_progress=False,
        )
    except Exception as e:  # pylint: disable=broad-except
        return {"sdk": f"azure-ai-ml {SDK_VERSION}", "refused": scrub(e), "sdk_exception": type(e).__name__}

    indicator = info["indicator file"]
    assert list(container.metadata) == [indicator], container.metadata
    assert container.metadata[indicator]["upload_status"] == "completed"
    return {
        "sdk": f"azure-ai-ml {SDK_VERSION}",
        "folder_name": os.path.basename(path),
        "hash": content_hash,
        "files": files,
        "blob_names": container.uploads,
        "indicator_blob": indicator,
    }


# Ignore-file lines and paths for tests/fixtures/gitwildmatch-vectors.json: for each line, the
# SDK's own GitWildMatchPattern says whether it is a no-op, excludes (include: true) or
# re-includes (include: false), which of PATHS it matches, or that it is refused.
PATTERNS = [
    "", "   ", "# comment", "  # indented comment", "\\#hash", "\\!bang", "/", "!", "!/", "!!x",
    "*", "**", "**/", "/**", "**/**", "***", "*/", "/*", "*.py", "!*.py", "/*.py", "*.py/",
    "a", "/a", "a/", "/a/", "a/b", "/a/b", "a/b/", "a/*", "a/*/", "a/**", "a/**/", "a/**/b",
    "a/**/**/b", "**/a", "**/a/b", "**/a/**", "a**b", "a*b", "a?b", "?", "??", "a/?",
    "[ab]", "[!ab]", "[^ab]", "[]]", "[]a]", "[!]]", "[a-c]", "[c-a]", "[a-]", "[-a]", "[a-c-e]",
    "[[]", "[", "a[", "[\\]", "[!", "[.]", "[a&&b]", "[~~]", "x[", "[]-a]",
    "\\*", "\\?", "\\[a]", "a\\", "a\\ ", "a\\ b", " a ", "a  ", "\t a", "a.b", "a+b", "(a)", "a|b",
    "é", "日本/*", "*.TXT", "A", "a b", "-", "a/./b", "./a", "../a", "a//b", "$", "^a", "a$",
    "\\\\", "[\\\\]", "[a\\]b]", "**/*.log", "logs/**/*.log", "!logs/keep.txt",
]
PATHS = [
    "a", "b", "c", "ab", "abb", "a b", "a.b", "a+b", "(a)", "a|b", "axb", "aXb", "a/b", "a/c",
    "a/b/c", "a/x/b", "a/x/y/b", "x/a", "x/a/b", "x/y/a", "x/a/y", "b/a", "ba", "aa/b",
    "a.py", "x/a.py", "a.py/b", "a.PY", "A", "A.TXT", "a.txt", "]", "-", "[", "a[", "\\",
    "!", "#hash", "!bang", "*", "?", "[a]", ".", ".a", "a.", "x/.a", "é", "e", "日本/x",
    "日本/x/y", "logs/a.log", "logs/x/a.log", "logs/keep.txt", "x.log", "d/x.log", "a\\",
    "a ", " a", "a  b", "$", "^a", "a$", "~", "&", "b]", "a/b\n", "a\n", "\n", "../a", "../x/a",
]


def pathspec_vectors():
    patterns = []
    for pattern in PATTERNS:
        try:
            compiled = GitWildMatchPattern(pattern)
        except Exception as e:  # pylint: disable=broad-except
            patterns.append({"pattern": pattern, "error": f"{type(e).__name__}: {e}"})
            continue
        matches = []
        if compiled.include is not None:
            matches = [p for p in PATHS if compiled.match_file(p) is not None]
        patterns.append({"pattern": pattern, "include": compiled.include, "matches": matches})
    return {"sdk": f"azure-ai-ml {SDK_VERSION}", "paths": PATHS, "patterns": patterns}


def main():
    # The SDK prints colour codes and a newline to stderr around an upload; keep them off the console.
    sys.stderr = open(os.devnull, "w", encoding="utf-8")  # pylint: disable=consider-using-with
    _blob_storage_helper.sys.stderr = sys.stderr
    for case in sorted(p for p in ROOT.iterdir() if p.is_dir()):
        result = golden(case)
        out = ROOT / f"{case.name}.golden.json"
        out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"{case.name}: {result.get('hash') or 'refused: ' + result['refused']}", file=sys.__stdout__)
    vectors = ROOT.parent / "gitwildmatch-vectors.json"
    vectors.write_text(json.dumps(pathspec_vectors(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
