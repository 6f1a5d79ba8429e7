"""The registry of deployed functions: deploy, resolve, list, delete, load, and failures that change nothing."""

from __future__ import annotations

import json
import os
import resource
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from confidential_nb import registry
from confidential_nb.bundles import Bundle, bundle_checksum, bundle_to_zip, read_directory
from confidential_nb.errors import BundleError
from confidential_nb.registry import FunctionRef, delete, deploy, list_functions, load_bundle, resolve

APP = b"def cape_handler(input_bytes):\n    return input_bytes.upper()\n"


def make_bundle(name: str = "shout", extra: dict[str, bytes] | None = None) -> Bundle:
    return Bundle({"app.py": APP, "lib/util.py": b"X = 1\n", **(extra or {})}, name=name)


def snapshot(home: Path) -> dict[str, bytes]:
    """Return every file under the registry folder, by relative path, to compare states."""
    root = home / "functions"
    return {path.relative_to(root).as_posix(): path.read_bytes()
            for path in sorted(root.rglob("*")) if path.is_file() and path.name != ".lock"}


@contextmanager
def file_size_limit(nbytes: int) -> Iterator[None]:
    """Make writes past ``nbytes`` in any file fail with EFBIG in this process, as a full quota would."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def test_deploy_round_trip(tmp_path: Path) -> None:
    bundle = make_bundle()

    ref = deploy(bundle, home=tmp_path)

    assert registry.FUNCTION_ID.match(ref.id)
    assert ref.name == "shout"
    assert ref.checksum == bundle_checksum(bundle)
    assert resolve(ref.id, home=tmp_path) == ref
    assert resolve("shout", home=tmp_path) == ref
    assert list_functions(home=tmp_path) == [ref]
    assert load_bundle(ref, home=tmp_path) == bundle
    assert load_bundle("shout", home=tmp_path).name == "shout"


def test_deploy_layout(tmp_path: Path) -> None:
    bundle = make_bundle()

    ref = deploy(bundle, name="custom", home=tmp_path)

    folder = tmp_path / "functions" / ref.id
    record = json.loads((folder / "function.json").read_text())
    assert set(record) == {"id", "name", "checksum", "created"}
    assert (record["id"], record["name"], record["checksum"]) == (ref.id, "custom", ref.checksum)
    assert record["created"].endswith("+00:00")
    assert (folder / "bundle.zip").read_bytes() == bundle_to_zip(bundle)
    assert json.loads((tmp_path / "functions" / "names.json").read_text()) == {"custom": ref.id}


def test_deploy_uses_key_home_by_default(key_home: Path) -> None:
    ref = deploy(make_bundle("default-home"))
    try:
        assert (key_home / "functions" / ref.id / "bundle.zip").is_file()
        assert resolve("default-home") == ref
    finally:
        delete(ref.id)


def test_deploy_name_from_folder(tmp_path: Path) -> None:
    folder = tmp_path / "word-count"
    folder.mkdir()
    (folder / "app.py").write_bytes(APP)

    ref = deploy(read_directory(folder), home=tmp_path / "home")

    assert ref.name == "word-count"


def test_redeploy_moves_name(tmp_path: Path) -> None:
    first = deploy(make_bundle(), home=tmp_path)
    second = deploy(make_bundle(), home=tmp_path)

    assert first.id != second.id
    assert first.checksum == second.checksum
    assert resolve("shout", home=tmp_path) == second
    assert resolve(first.id, home=tmp_path) == first
    assert list_functions(home=tmp_path) == [first, second]


def test_delete_by_name(tmp_path: Path) -> None:
    kept = deploy(make_bundle("other"), home=tmp_path)
    ref = deploy(make_bundle(), home=tmp_path)

    assert delete("shout", home=tmp_path) == ref

    assert list_functions(home=tmp_path) == [kept]
    assert not (tmp_path / "functions" / ref.id).exists()
    assert json.loads((tmp_path / "functions" / "names.json").read_text()) == {"other": kept.id}
    with pytest.raises(BundleError, match="no deployed function has the id or name 'shout'"):
        resolve("shout", home=tmp_path)


def test_delete_old_deploy_keeps_name(tmp_path: Path) -> None:
    first = deploy(make_bundle(), home=tmp_path)
    second = deploy(make_bundle(), home=tmp_path)

    delete(first.id, home=tmp_path)

    assert resolve("shout", home=tmp_path) == second
    assert list_functions(home=tmp_path) == [second]


def test_unknown_id_suggests_list(tmp_path: Path) -> None:
    deploy(make_bundle(), home=tmp_path)

    with pytest.raises(BundleError, match="'AAAAAAAAAAAAAAAA'") as caught:
        resolve("AAAAAAAAAAAAAAAA", home=tmp_path)

    assert "confidential-nb list" in str(caught.value)


def test_unknown_on_empty_registry(tmp_path: Path) -> None:
    assert list_functions(home=tmp_path) == []
    with pytest.raises(BundleError, match="confidential-nb list"):
        delete("nothing-here", home=tmp_path)


@pytest.mark.parametrize("value", ["../../etc", "a/b", "", "..", "/etc/passwd", ".lock", "names.json/..", "x" * 65])
def test_traversal_ids_rejected(tmp_path: Path, value: str) -> None:
    deploy(make_bundle(), home=tmp_path)

    with pytest.raises(BundleError, match="invalid function id|no deployed function"):
        resolve(value, home=tmp_path)
    with pytest.raises(BundleError, match="invalid function id|no deployed function"):
        load_bundle(value, home=tmp_path)


@pytest.mark.parametrize("name", ["../evil", "a/b", ".hidden", "", "x" * 65, "sp ace"])
def test_invalid_name_rejected(tmp_path: Path, name: str) -> None:
    with pytest.raises(BundleError, match="invalid function name"):
        deploy(make_bundle(), name=name, home=tmp_path)

    assert list_functions(home=tmp_path) == []


def test_name_equal_to_id_rejected(tmp_path: Path) -> None:
    ref = deploy(make_bundle(), home=tmp_path)

    with pytest.raises(BundleError, match="already a function id"):
        deploy(make_bundle(), name=ref.id, home=tmp_path)


def test_invalid_bundle_leaves_registry(tmp_path: Path) -> None:
    deploy(make_bundle(), home=tmp_path)
    before = snapshot(tmp_path)
    broken = Bundle({"app.py": b"def handler(input_bytes):\n    return input_bytes\n"}, name="shout")

    with pytest.raises(BundleError, match="cape_handler"):
        deploy(broken, home=tmp_path)

    assert snapshot(tmp_path) == before


def test_missing_requirement_leaves_registry(tmp_path: Path) -> None:
    deploy(make_bundle(), home=tmp_path)
    before = snapshot(tmp_path)

    with pytest.raises(BundleError, match="pip install --target"):
        deploy(make_bundle(extra={"requirements.txt": b"confidential-nb-test-missing-package\n"}), home=tmp_path)

    assert snapshot(tmp_path) == before


def test_failed_bundle_write_leaves_registry(tmp_path: Path) -> None:
    existing = deploy(make_bundle(), home=tmp_path)
    before = snapshot(tmp_path)
    large = make_bundle(extra={"data.bin": os.urandom(300_000)})

    with file_size_limit(100_000), pytest.raises(BundleError, match="failed while writing.*registry is unchanged"):
        deploy(large, home=tmp_path)

    assert snapshot(tmp_path) == before
    assert list_functions(home=tmp_path) == [existing]
    assert [path.name for path in (tmp_path / "functions").iterdir() if path.name.startswith(".deploy")] == []


def test_failed_name_update_leaves_registry(tmp_path: Path) -> None:
    existing = deploy(make_bundle(), home=tmp_path)
    names_path = tmp_path / "functions" / "names.json"
    names = json.loads(names_path.read_text())
    names.update({f"placeholder-{index:03d}": f"missing-id-{index:06d}" for index in range(60)})
    names_path.write_text(json.dumps(names))
    before = snapshot(tmp_path)
    assert len(names_path.read_bytes()) > 2000

    with file_size_limit(2000), pytest.raises(BundleError, match="failed while updating.*registry is unchanged"):
        deploy(make_bundle(), home=tmp_path)

    assert snapshot(tmp_path) == before
    assert list_functions(home=tmp_path) == [existing]
    assert resolve("shout", home=tmp_path) == existing


def test_tampered_bundle_detected(tmp_path: Path) -> None:
    ref = deploy(make_bundle(), home=tmp_path)
    other = Bundle({"app.py": b"def cape_handler(input_bytes):\n    return b'leak'\n"})
    (tmp_path / "functions" / ref.id / "bundle.zip").write_bytes(bundle_to_zip(other))

    with pytest.raises(BundleError, match="changed after deploy"):
        load_bundle(ref, home=tmp_path)


def test_stale_reference_detected(tmp_path: Path) -> None:
    ref = deploy(make_bundle(), home=tmp_path)
    stale = FunctionRef(id=ref.id, name=ref.name, checksum="0" * 64)

    with pytest.raises(BundleError, match="not the expected"):
        load_bundle(stale, home=tmp_path)


def test_damaged_record_skipped_in_list(tmp_path: Path) -> None:
    good = deploy(make_bundle(), home=tmp_path)
    bad = deploy(make_bundle("other"), home=tmp_path)
    (tmp_path / "functions" / bad.id / "function.json").write_text("{not json")

    assert list_functions(home=tmp_path) == [good]
    with pytest.raises(BundleError, match="not valid JSON"):
        resolve(bad.id, home=tmp_path)


def test_record_id_must_match_folder(tmp_path: Path) -> None:
    ref = deploy(make_bundle(), home=tmp_path)
    path = tmp_path / "functions" / ref.id / "function.json"
    record = json.loads(path.read_text())
    record["id"] = "B" * 16
    path.write_text(json.dumps(record))

    with pytest.raises(BundleError, match="not its folder name"):
        resolve(ref.id, home=tmp_path)


def test_function_ref_json_round_trip(tmp_path: Path) -> None:
    ref = FunctionRef(id="abcdEFGH_-12", name="shout", checksum="a" * 64)

    assert FunctionRef.from_json(ref.to_json()) == ref
    ref.save(tmp_path / "ref.json")
    assert FunctionRef.load(tmp_path / "ref.json") == ref


@pytest.mark.parametrize("text", [
    "[]", "{not json", '{"id": "abcdefgh", "name": "x"}',
    '{"id": "../../etc", "name": "x", "checksum": "' + "a" * 64 + '"}',
    '{"id": "abcdefgh", "name": "x", "checksum": "ABC"}',
    '{"id": "abcdefgh", "name": "x", "checksum": 5}',
])
def test_function_ref_rejects_bad_json(text: str) -> None:
    with pytest.raises(BundleError):
        FunctionRef.from_json(text)


def test_function_ref_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="cannot read function reference"):
        FunctionRef.load(tmp_path / "absent.json")



def test_function_ids_start_alphanumeric(tmp_path):
    # Without the rule, 1,000 ids all avoiding a leading "-" or "_" has probability (62/64)**1000, about 1e-14.
    from confidential_nb import registry

    ids = [registry._new_id(tmp_path, {}) for _ in range(1000)]
    assert all(identifier[0].isalnum() for identifier in ids)
