"""Forgetting that leaves nothing to recognise: after a purge, no file in the memory folder betrays the image, and
the certificate handed to the requester still proves what was removed."""

import hashlib
import json

import numpy as np
import pytest

from vmem_core import VisualMemory
from vmem_core.errors import VmemError
from vmem_core.unlearn import purge

from .helpers import png_bytes, vmem

NAME = "forget-me-7c1e9a.png"


def traces_of(image_file, embedding: np.ndarray) -> dict[str, bytes]:
    """Everything that would let someone holding the image recognise it: its name, and the hex and raw digests of
    its bytes and of its embedding."""
    data = image_file.read_bytes()
    needles = {"file name": NAME.encode(), "path": str(image_file).encode()}
    for algorithm in ("sha256", "md5", "sha1"):
        digest = hashlib.new(algorithm, data)
        needles[f"{algorithm} hex"] = digest.hexdigest().encode()
        needles[f"{algorithm} HEX"] = digest.hexdigest().upper().encode()
        needles[f"{algorithm} raw"] = digest.digest()
    vector = np.asarray(embedding, np.float32).tobytes()
    needles["embedding sha256 hex"] = hashlib.sha256(vector).hexdigest().encode()
    needles["embedding sha256 raw"] = hashlib.sha256(vector).digest()
    return needles


def found_in(folder, needles: dict[str, bytes]) -> list[str]:
    return [f"{what} in {path.relative_to(folder)}" for path in sorted(folder.rglob("*")) if path.is_file()
            for what, needle in needles.items() if needle in path.read_bytes()]


@pytest.fixture
def purged(memory, tmp_path):
    """A memory from which one distinctive image, added from a named file, was purged; the requester's certificate
    path and the traces the image could have left."""
    image_file = tmp_path / "elsewhere" / NAME
    image_file.parent.mkdir()
    image_file.write_bytes(png_bytes(np.random.default_rng(7).integers(0, 256, (28, 28))))
    (exemplar,) = memory.exemplars.add([image_file], "bag")
    row = memory.exemplars.rows([exemplar]).iloc[0]
    assert row["source"] == str(image_file)  # the memory did know the values the scan looks for
    assert row["sha256"] == hashlib.sha256(image_file.read_bytes()).hexdigest()
    _, (embedding,) = memory.exemplars.stored_embeddings([exemplar])
    needles = traces_of(image_file, embedding)
    memory.exemplars.delete([exemplar])
    certificate_path = tmp_path / "requester" / "certificate.json"
    certificate_path.parent.mkdir()
    certificate = purge(memory, [exemplar], certificate_path=certificate_path)
    assert certificate.passed, certificate.explain()
    audit = json.dumps([entry.__dict__ for entry in memory.audit.log()])
    memory.close()
    return memory.path, exemplar, certificate_path, needles, audit


def test_no_file_in_the_memory_holds_a_trace_of_the_purged_image(purged):
    path, exemplar, certificate_path, needles, audit = purged
    assert found_in(path, needles) == []
    # the audit log read through DuckDB, which may compress what it stores: still nothing, yet the purge is there
    assert not [what for what, needle in needles.items() if "raw" not in what and needle.decode() in audit]
    assert '"purge_id' in audit and "commitments" in audit


def test_the_requesters_certificate_proves_what_was_removed(purged):
    path, exemplar, certificate_path, needles, _ = purged
    certificate = json.loads(certificate_path.read_text())
    (removed,) = certificate["removed"]
    assert removed["id"] == exemplar and removed["source"].endswith(NAME)
    assert removed["image_sha256"].encode() == needles["sha256 hex"] and len(removed["salt"]) == 64
    verified = vmem("purge", "verify", certificate_path, path, "--json")
    assert verified.returncode == 0, verified.stderr
    result = json.loads(verified.stdout)
    assert result["ok"] and [c["name"] for c in result["checks"]] == [
        "audit log intact", "purge recorded", "commitments", "certificate unaltered", "ids absent"]


@pytest.mark.parametrize("edit, failing", [
    (lambda c: c["removed"][0].update(image_sha256=hashlib.sha256(b"another image").hexdigest()),
     {"commitments", "certificate unaltered"}),
    (lambda c: c["removed"][0].update(salt="00" * 32), {"commitments", "certificate unaltered"}),
    (lambda c: c["checks"][0].update(passed=False), {"certificate unaltered"}),
    (lambda c: c.update(purge_id="0" * 32), {"purge recorded", "certificate unaltered"}),
])
def test_an_edited_certificate_does_not_verify(purged, tmp_path, edit, failing):
    path, _, certificate_path, _, _ = purged
    certificate = json.loads(certificate_path.read_text())
    edit(certificate)
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(certificate))
    result = vmem("purge", "verify", forged, path)
    assert result.returncode == 1, result.stderr
    failed = {line.split(":")[0].removeprefix("FAILED  ") for line in result.stdout.splitlines()
              if line.startswith("FAILED")}
    assert failed == failing and "NOT verified" in result.stdout


def test_a_certificate_path_inside_the_memory_is_refused_before_anything_is_purged(memory):
    memory.exemplars.delete([4])
    with pytest.raises(VmemError, match="inside the memory folder .* choose a path outside it. Nothing was purged"):
        purge(memory, [4], certificate_path=memory.path / "certificates" / "mine.json")
    assert memory.exemplars.tombstoned_ids() == [4]


def test_an_existing_certificate_is_never_overwritten(memory, tmp_path):
    # the certificate holds the only salts that open its purge's commitments: a second purge to the same path
    # would have destroyed the proof of the first
    memory.exemplars.delete([3, 4])
    first = tmp_path / "cert.json"
    purge(memory, [3], certificate_path=first)
    kept = first.read_bytes()
    with pytest.raises(VmemError, match=f"certificate path {first} already exists; choose a new path .* Nothing was "
                                        "purged"):
        purge(memory, [4], certificate_path=first)
    assert first.read_bytes() == kept and memory.exemplars.tombstoned_ids() == [4]


def test_purge_from_the_cli_hands_out_the_certificate_and_keeps_a_receipt(memory, tmp_path):
    path = memory.path
    memory.exemplars.delete([2])
    memory.close()
    result = vmem("purge", path, 2, "--certificate", tmp_path / "cert.json")
    assert result.returncode == 0, result.stderr
    assert f"certificate written to {tmp_path / 'cert.json'}" in result.stdout
    certificate = json.loads((tmp_path / "cert.json").read_text())
    (receipt_file,) = (path / "certificates").iterdir()
    receipt = json.loads(receipt_file.read_text())
    assert receipt["ids"] == [2] and receipt["commitments"] == [certificate["removed"][0]["commitment"]]
    assert "removed" not in receipt and "digest_before" not in receipt
    bad = vmem("purge", path, "two")
    assert bad.returncode == 2 and bad.stderr.strip() == "vmem: error: 'two' is not an exemplar id (a whole number)"
    usage = vmem("purge", "verify", tmp_path / "cert.json")
    assert usage.returncode == 2 and "usage: vmem purge verify CERT MEM" in usage.stderr
    with VisualMemory.open(path) as reopened:
        assert reopened.exemplars.rows([2]).empty
