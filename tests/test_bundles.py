"""Function bundles: loading folders and zips, limits, path rules, Cape app checks, requirements, checksum."""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import os
import re
import shutil
import socket
import stat
import struct
import subprocess
import warnings
import zipfile
from pathlib import Path

import pytest

from confidential_nb.bundles import (
    Bundle,
    BundleLimits,
    bundle_checksum,
    bundle_to_zip,
    check_requirements,
    parse_requirements,
    read_bundle,
    read_directory,
    read_zip,
    validate_cape_app,
    write_bundle,
)
from confidential_nb.errors import BundleError, ConfidentialNBError

APP = b"def cape_handler(input_bytes):\n    return input_bytes.upper()\n"
MISSING_PACKAGE = "confidential-nb-test-missing-package"


def make_app(parent: Path, name: str = "app", files: dict[str, bytes] | None = None) -> Path:
    """Create an app folder with app.py, a helper module and a data file, plus ``files``."""
    folder = parent / name
    contents = {"app.py": APP, "helpers/__init__.py": b"", "helpers/text.py": b"UPPER = str.upper\n",
                "data/table.csv": b"a,b\n1,2\n"}
    contents.update(files or {})
    for relative, content in contents.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return folder


def zip_entries(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED, level: int | None = None) -> bytes:
    output = io.BytesIO()
    with zipfile.ZipFile(output, "w", compression=compression, compresslevel=level) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return output.getvalue()


def zip_folder(folder: Path, *, with_top: bool, compression: int = zipfile.ZIP_DEFLATED,
               level: int | None = None) -> bytes:
    entries = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            relative = path.relative_to(folder.parent if with_top else folder).as_posix()
            entries[relative] = path.read_bytes()
    return zip_entries(entries, compression, level)


# Loading folders ------------------------------------------------------------------------------------

def test_directory_loads_files(tmp_path: Path) -> None:
    bundle = read_directory(make_app(tmp_path))

    assert list(bundle.files) == ["app.py", "data/table.csv", "helpers/__init__.py", "helpers/text.py"]
    assert bundle.files["app.py"] == APP
    assert bundle.name == "app"
    assert bundle.source == tmp_path / "app"
    assert bundle.total_bytes == sum(len(content) for content in bundle.files.values())


def test_directory_excludes_caches(tmp_path: Path) -> None:
    folder = make_app(tmp_path, files={
        "__pycache__/app.cpython-311.pyc": b"x", "helpers/__pycache__/text.cpython-311.pyc": b"x",
        "legacy.pyc": b"x", "old.pyo": b"x", ".git/HEAD": b"ref", ".DS_Store": b"x",
        "vendor/.git": b"gitdir: elsewhere", ".ipynb_checkpoints/app-checkpoint.py": b"x",
        ".hidden_config": b"kept",
    })

    bundle = read_directory(folder)

    assert sorted(bundle.files) == [".hidden_config", "app.py", "data/table.csv", "helpers/__init__.py",
                                    "helpers/text.py"]


def test_missing_folder_rejected(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not found"):
        read_directory(tmp_path / "absent")


def test_empty_folder_rejected(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()

    with pytest.raises(BundleError, match="contains no files"):
        read_directory(tmp_path / "empty")


def test_bundle_error_is_package_error() -> None:
    assert issubclass(BundleError, ConfidentialNBError)


def test_link_inside_folder_stores_target(tmp_path: Path) -> None:
    folder = make_app(tmp_path)
    (folder / "alias.py").symlink_to("helpers/text.py")

    bundle = read_directory(folder)

    assert bundle.files["alias.py"] == b"UPPER = str.upper\n"


def test_link_outside_folder_rejected(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"do not ship")
    folder = make_app(tmp_path)
    (folder / "leak.txt").symlink_to(secret)

    with pytest.raises(BundleError, match="'leak.txt' points outside the app folder"):
        read_directory(folder)


def test_relative_link_escaping_rejected(tmp_path: Path) -> None:
    (tmp_path / "outside.py").write_bytes(b"x = 1\n")
    folder = make_app(tmp_path)
    (folder / "helpers" / "up.py").symlink_to("../../outside.py")

    with pytest.raises(BundleError, match="points outside"):
        read_directory(folder)


def test_link_to_directory_rejected(tmp_path: Path) -> None:
    folder = make_app(tmp_path)
    (folder / "loop").symlink_to(".")

    with pytest.raises(BundleError, match="points to a directory"):
        read_directory(folder)


def test_dangling_link_rejected(tmp_path: Path) -> None:
    folder = make_app(tmp_path)
    (folder / "gone.py").symlink_to("missing.py")

    with pytest.raises(BundleError, match="dangling"):
        read_directory(folder)


def test_fifo_rejected(tmp_path: Path) -> None:
    folder = make_app(tmp_path)
    os.mkfifo(folder / "data" / "pipe")

    with pytest.raises(BundleError, match="'data/pipe' is a FIFO"):
        read_directory(folder)


def test_socket_rejected(tmp_path: Path) -> None:
    folder = make_app(tmp_path)
    listener = socket.socket(socket.AF_UNIX)
    try:
        listener.bind(str(folder / "control.sock"))
        with pytest.raises(BundleError, match="is a socket"):
            read_directory(folder)
    finally:
        listener.close()


def test_excluded_fifo_ignored(tmp_path: Path) -> None:
    folder = make_app(tmp_path)
    (folder / ".git").mkdir()
    os.mkfifo(folder / ".git" / "pipe")

    assert "app.py" in read_directory(folder).files


def test_folder_too_many_files(tmp_path: Path) -> None:
    folder = make_app(tmp_path, files={f"extra/{index}.txt": b"x" for index in range(3)})

    with pytest.raises(BundleError, match="more than 6 files"):
        read_directory(folder, limits=BundleLimits(max_files=6))
    assert len(read_directory(folder, limits=BundleLimits(max_files=7)).files) == 7


def test_folder_total_size_limit(tmp_path: Path) -> None:
    folder = make_app(tmp_path, files={"data/big.bin": b"\x01" * 5000})

    with pytest.raises(BundleError, match="larger than 4000 bytes"):
        read_directory(folder, limits=BundleLimits(max_total_bytes=4000))


def test_folder_file_size_limit(tmp_path: Path) -> None:
    folder = make_app(tmp_path, files={"data/big.bin": b"\x01" * 5000})

    with pytest.raises(BundleError, match="'data/big.bin' is larger than 4096 bytes"):
        read_directory(folder, limits=BundleLimits(max_file_bytes=4096))


def test_non_utf8_name_rejected(tmp_path: Path) -> None:
    folder = make_app(tmp_path)
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.py"), "wb") as handle:
        handle.write(b"x = 1\n")

    with pytest.raises(BundleError, match="not valid UTF-8"):
        read_directory(folder)


# Loading zips ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("entry", ["../x.py", "/abs/x.py", "a/../../x.py", "C:/x.py", "a\\..\\x.py", "a//x.py",
                                   "./x.py"])
def test_zip_unsafe_path_rejected(entry: str) -> None:
    data = zip_entries({"app.py": APP, entry: b"payload"})

    with pytest.raises(BundleError, match="bundle path"):
        read_zip(data)


def test_zip_duplicate_rejected() -> None:
    output = io.BytesIO()
    with zipfile.ZipFile(output, "w") as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        archive.writestr("app.py", APP)
        archive.writestr("app.py", b"def cape_handler(x):\n    return b'other'\n")

    with pytest.raises(BundleError, match="contains 'app.py' twice"):
        read_zip(output.getvalue())


def test_zip_file_and_folder_conflict() -> None:
    data = zip_entries({"app.py": APP, "lib": b"file", "lib/x.py": b"folder"})

    with pytest.raises(BundleError, match="'lib' is both a file and the folder"):
        read_zip(data)


def test_zip_symlink_entry_rejected() -> None:
    output = io.BytesIO()
    with zipfile.ZipFile(output, "w") as archive:
        archive.writestr("app.py", APP)
        link = zipfile.ZipInfo("passwd")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")

    with pytest.raises(BundleError, match="'passwd' is a symbolic link"):
        read_zip(output.getvalue())


def test_zip_encrypted_entry_rejected() -> None:
    output = io.BytesIO()
    with zipfile.ZipFile(output, "w") as archive:
        info = zipfile.ZipInfo("app.py")
        archive.writestr(info, APP)
    data = bytearray(output.getvalue())
    # Set bit 0 (encrypted) of the general purpose flags in the central directory header.
    central = data.index(b"PK\x01\x02")
    data[central + 8] |= 0x01

    with pytest.raises(BundleError, match="encrypted"):
        read_zip(bytes(data))


def test_zip_bomb_rejected_from_headers() -> None:
    data = zip_entries({"app.py": APP, "zeros.bin": bytes(8 * 1024 * 1024)}, level=9)

    with pytest.raises(BundleError, match="looks like a zip bomb"):
        read_zip(data)


def test_zip_declared_total_too_large() -> None:
    data = zip_entries({"app.py": APP, **{f"part{index}.txt": os.urandom(3000) for index in range(4)}})

    with pytest.raises(BundleError, match="declares more than 10000 bytes uncompressed"):
        read_zip(data, limits=BundleLimits(max_total_bytes=10_000))


def test_zip_declared_file_too_large() -> None:
    data = zip_entries({"app.py": APP, "big.bin": os.urandom(5000)})

    with pytest.raises(BundleError, match="'big.bin' declares 5000 bytes"):
        read_zip(data, limits=BundleLimits(max_file_bytes=4096))


def test_zip_forged_size_rejected_while_reading() -> None:
    data = bytearray(zip_entries({"app.py": APP, "big.txt": b"a" * 200_000}))
    # Declare 1000 bytes uncompressed in both the local and the central header of big.txt.
    local = data.index(b"PK\x03\x04", data.index(b"big.txt") - 30)
    struct.pack_into("<I", data, local + 22, 1000)
    central = data.index(b"PK\x01\x02", data.index(b"PK\x01\x02") + 4)
    struct.pack_into("<I", data, central + 24, 1000)

    with pytest.raises(BundleError, match="damaged"):
        read_zip(bytes(data))


def test_zip_too_many_files() -> None:
    data = zip_entries({"app.py": APP, **{f"f{index}.txt": b"x" for index in range(5)}})

    with pytest.raises(BundleError, match="more than 5 files"):
        read_zip(data, limits=BundleLimits(max_files=5))


def test_zip_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "app.zip"
    path.write_bytes(b"not a zip at all")

    with pytest.raises(BundleError, match="damaged or not a supported zip"):
        read_zip(path)


def test_zip_path_must_be_regular_file(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "app.zip")

    with pytest.raises(BundleError, match="not a regular file"):
        read_zip(tmp_path / "app.zip")


def test_top_folder_zip_equals_folder(tmp_path: Path) -> None:
    folder = make_app(tmp_path, name="sentiment")
    path = tmp_path / "upload.zip"
    path.write_bytes(zip_folder(folder, with_top=True))

    from_zip = read_zip(path)

    assert from_zip == read_directory(folder)
    assert from_zip.name == "sentiment"
    assert bundle_checksum(from_zip) == bundle_checksum(read_directory(folder))


def test_top_folder_kept_with_root_files() -> None:
    bundle = read_zip(zip_entries({"README.md": b"hi", "app/app.py": APP}))

    assert sorted(bundle.files) == ["README.md", "app/app.py"]


def test_macos_litter_excluded_before_collapse() -> None:
    bundle = read_zip(zip_entries({"app/app.py": APP, "__MACOSX/app/._app.py": b"\x00\x05",
                                   "app/.DS_Store": b"x"}))

    assert list(bundle.files) == ["app.py"]


def test_read_bundle_dispatches(tmp_path: Path) -> None:
    folder = make_app(tmp_path)
    path = tmp_path / "app.zip"
    path.write_bytes(zip_folder(folder, with_top=False))

    assert read_bundle(path) == read_bundle(folder)
    assert read_bundle(path).name == "app"


# Bundle, checksum, zip, write -----------------------------------------------------------------------

def test_bundle_is_immutable() -> None:
    bundle = Bundle({"app.py": APP})

    with pytest.raises(TypeError):
        bundle.files["app.py"] = b"changed"  # type: ignore[index]
    with pytest.raises(AttributeError):
        bundle.name = "other"  # type: ignore[misc]


def test_bundle_rejects_bad_path() -> None:
    with pytest.raises(BundleError, match="'..' component"):
        Bundle({"../app.py": APP})


def test_bundle_orders_by_utf8_bytes() -> None:
    bundle = Bundle({"b.py": b"", "\u00e9.py": b"", "B.py": b"", "a/z.py": b""})

    assert list(bundle.files) == ["B.py", "a/z.py", "b.py", "\u00e9.py"]


def test_checksum_ignores_folder_name_mtime_mode(tmp_path: Path) -> None:
    first = make_app(tmp_path, name="first")
    second = make_app(tmp_path, name="second")
    for path in second.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000))
        if path.is_file():
            path.chmod(0o755)

    assert bundle_checksum(read_directory(first)) == bundle_checksum(read_directory(second))


@pytest.mark.parametrize(("compression", "level"), [
    (zipfile.ZIP_STORED, None), (zipfile.ZIP_DEFLATED, 1), (zipfile.ZIP_DEFLATED, 9),
    (zipfile.ZIP_BZIP2, None), (zipfile.ZIP_LZMA, None),
])
@pytest.mark.parametrize("with_top", [False, True])
def test_checksum_same_for_zip_variants(tmp_path: Path, compression: int, level: int | None,
                                        with_top: bool) -> None:
    folder = make_app(tmp_path)
    data = zip_folder(folder, with_top=with_top, compression=compression, level=level)

    assert bundle_checksum(read_zip(data)) == bundle_checksum(read_directory(folder))


@pytest.mark.skipif(shutil.which("zip") is None, reason="the zip command is not installed")
@pytest.mark.parametrize("arguments", [["-r", "-X", "-9"], ["-r", "-0"], ["-r", "-D"]])
def test_checksum_same_for_zip_command(tmp_path: Path, arguments: list[str]) -> None:
    folder = make_app(tmp_path, files={"__pycache__/app.cpython-311.pyc": b"cache"})
    inside = tmp_path / "inside.zip"
    around = tmp_path / "around.zip"

    subprocess.run(["zip", "-q", *arguments, str(inside), "."], cwd=folder, check=True)
    subprocess.run(["zip", "-q", *arguments, str(around), "app"], cwd=tmp_path, check=True)

    expected = bundle_checksum(read_directory(folder))
    assert bundle_checksum(read_zip(inside)) == expected
    assert bundle_checksum(read_zip(around)) == expected


@pytest.mark.skipif(shutil.which("zip") is None, reason="the zip command is not installed")
def test_zip_command_symlinks_rejected(tmp_path: Path) -> None:
    folder = make_app(tmp_path)
    (folder / "alias.py").symlink_to("app.py")
    path = tmp_path / "links.zip"

    subprocess.run(["zip", "-q", "-r", "-y", str(path), "."], cwd=folder, check=True)

    with pytest.raises(BundleError, match="'alias.py' is a symbolic link"):
        read_zip(path)


def test_checksum_changes_with_one_byte(tmp_path: Path) -> None:
    folder = make_app(tmp_path)
    before = bundle_checksum(read_directory(folder))
    data = bytearray((folder / "data" / "table.csv").read_bytes())
    data[-2] ^= 0x01
    (folder / "data" / "table.csv").write_bytes(bytes(data))

    assert bundle_checksum(read_directory(folder)) != before


def test_checksum_separates_path_and_content() -> None:
    assert bundle_checksum(Bundle({"ab": b"c"})) != bundle_checksum(Bundle({"a": b"bc"}))


def test_checksum_changes_with_rename() -> None:
    assert bundle_checksum(Bundle({"app.py": APP})) != bundle_checksum(Bundle({"main.py": APP}))


def independent_checksum(files: dict[str, bytes]) -> str:
    """Recompute the bundle checksum exactly as docs/FUNCTIONS.md defines it."""
    stream = b"confidential_nb bundle v1\x00"
    for path in sorted(files, key=lambda name: name.encode("utf-8")):
        encoded = path.encode("utf-8")
        stream += len(encoded).to_bytes(8, "big") + encoded
        stream += len(files[path]).to_bytes(8, "big") + files[path]
    return hashlib.sha256(stream).hexdigest()


def test_documented_example_checksum() -> None:
    document = (Path(__file__).parent.parent / "docs" / "FUNCTIONS.md").read_text(encoding="utf-8")
    example = document.split("<!-- example:start -->", 1)[1].split("<!-- example:end -->", 1)[0]
    files = {
        "app.py": b"def cape_handler(input_bytes):\n    return input_bytes[::-1]\n",
        "requirements.txt": b"numpy\n",
    }
    documented = re.search(r"checksum: ([0-9a-f]{64})", example)

    assert documented is not None
    assert independent_checksum(files) == documented.group(1)
    assert bundle_checksum(Bundle(files)) == documented.group(1)
    assert "return input_bytes[::-1]" in example


def test_checksum_matches_independent_for_app(tmp_path: Path) -> None:
    bundle = read_directory(make_app(tmp_path))

    assert bundle_checksum(bundle) == independent_checksum(dict(bundle.files))


def test_bundle_zip_is_deterministic(tmp_path: Path) -> None:
    first = read_directory(make_app(tmp_path, name="one"))
    second = read_zip(zip_folder(make_app(tmp_path, name="two"), with_top=True, level=1))

    assert bundle_to_zip(first) == bundle_to_zip(second)
    assert read_zip(bundle_to_zip(first)) == first


def test_write_bundle_round_trip(tmp_path: Path) -> None:
    bundle = read_directory(make_app(tmp_path))

    written = write_bundle(bundle, tmp_path / "copy")

    assert read_directory(written) == bundle


def test_write_bundle_needs_empty_folder(tmp_path: Path) -> None:
    target = tmp_path / "copy"
    target.mkdir()
    (target / "existing.txt").write_bytes(b"x")

    with pytest.raises(BundleError, match="not empty"):
        write_bundle(Bundle({"app.py": APP}), target)


# Cape app checks ------------------------------------------------------------------------------------

def test_valid_app_passes(tmp_path: Path) -> None:
    validate_cape_app(read_directory(make_app(tmp_path)))


def test_app_py_missing() -> None:
    with pytest.raises(BundleError, match="no app.py") as caught:
        validate_cape_app(Bundle({"main.py": APP}, name="demo"))

    assert "def cape_handler(input_bytes):" in str(caught.value)
    assert "'demo'" in str(caught.value)


def test_app_py_in_subfolder_is_not_enough() -> None:
    with pytest.raises(BundleError, match="no app.py at its top level"):
        validate_cape_app(Bundle({"src/app.py": APP, "README.md": b""}))


def test_handler_missing() -> None:
    with pytest.raises(BundleError, match="does not define a top-level function cape_handler") as caught:
        validate_cape_app(Bundle({"app.py": b"def handler(input_bytes):\n    return input_bytes\n"}))

    assert "def cape_handler(input_bytes):" in str(caught.value)


@pytest.mark.parametrize("source", [
    b"class App:\n    def cape_handler(self, input_bytes):\n        return input_bytes\n",
    b"if True:\n    def cape_handler(input_bytes):\n        return input_bytes\n",
    b"cape_handler = lambda input_bytes: input_bytes\n",
])
def test_handler_not_top_level_def(source: bytes) -> None:
    with pytest.raises(BundleError, match="does not define a top-level function cape_handler"):
        validate_cape_app(Bundle({"app.py": source}))


def test_syntax_error_names_line() -> None:
    source = b"import json\n\ndef cape_handler(input_bytes)\n    return input_bytes\n"

    with pytest.raises(BundleError, match="syntax error at line 3"):
        validate_cape_app(Bundle({"app.py": source}))


def test_null_byte_source_rejected() -> None:
    with pytest.raises(BundleError, match="app.py"):
        validate_cape_app(Bundle({"app.py": b"def cape_handler(x):\n    return x\x00\n"}))


@pytest.mark.parametrize(("signature", "problem"), [
    ("()", "takes no positional argument"),
    ("(**kwargs)", "takes no positional argument"),
    ("(*, input_bytes)", "takes no positional argument"),
    ("(input_bytes, context)", "requires 2 positional arguments"),
    ("(input_bytes, /, context)", "requires 2 positional arguments"),
    ("(input_bytes, *, mode)", "requires keyword-only arguments mode"),
])
def test_handler_wrong_signature(signature: str, problem: str) -> None:
    source = f"def cape_handler{signature}:\n    return b''\n".encode()

    with pytest.raises(BundleError, match=re.escape(problem)) as caught:
        validate_cape_app(Bundle({"app.py": source}))

    assert "line 1" in str(caught.value)
    assert "def cape_handler(input_bytes):" in str(caught.value)


@pytest.mark.parametrize("signature", [
    "(input_bytes)", "(input_bytes, /)", "(data, verbose=False)", "(*args)", "(input_bytes, *, mode='fast')",
    "(input_bytes=b'', **options)", "(data, *rest, **options)",
])
def test_handler_signatures_accepted(signature: str) -> None:
    validate_cape_app(Bundle({"app.py": f"def cape_handler{signature}:\n    return b''\n".encode()}))


def test_async_handler_rejected() -> None:
    source = b"async def cape_handler(input_bytes):\n    return input_bytes\n"

    with pytest.raises(BundleError, match="cape_handler is async"):
        validate_cape_app(Bundle({"app.py": source}))


def test_last_handler_definition_wins() -> None:
    source = b"def cape_handler(input_bytes):\n    return b''\n\ndef cape_handler():\n    return b''\n"

    with pytest.raises(BundleError, match="line 4: cape_handler takes no positional argument"):
        validate_cape_app(Bundle({"app.py": source}))


# Requirements ---------------------------------------------------------------------------------------

def test_requirements_parsing() -> None:
    text = (
        "# a comment\n"
        "numpy>=1.24  # inline comment\n"
        "pandas[performance]==2.2.1\n"
        "\n"
        "-r other.txt\n"
        "--index-url https://example.invalid/simple\n"
        "pywin32; sys_platform == 'win32'\n"
        "requests @ https://example.invalid/requests.whl\n"
        "git+https://example.invalid/repo.git#egg=thing\n"
        "./local/package\n"
        "matplotlib \\\n"
        "    ==3.8.0\n"
    )

    requirements, warnings = parse_requirements(text)

    assert [(item.name, item.line, item.pinned) for item in requirements] == [
        ("numpy", 2, None), ("pandas", 3, "2.2.1"), ("requests", 8, None), ("matplotlib", 11, "3.8.0"),
    ]
    assert len(warnings) == 5
    assert "line 5" in warnings[0] and "'-r'" in warnings[0]
    assert "line 7" in warnings[2] and "environment marker" in warnings[2]
    assert "line 9" in warnings[3] and "names no package" in warnings[3]
    assert "line 10" in warnings[4]


def test_missing_package_names_pip_command(tmp_path: Path) -> None:
    folder = make_app(tmp_path, files={"requirements.txt": f"numpy\n{MISSING_PACKAGE}>=1.0\n".encode()})

    with pytest.raises(BundleError) as caught:
        check_requirements(read_directory(folder))

    assert f"pip install --target {folder} {MISSING_PACKAGE}" in str(caught.value)
    assert f"requirements.txt lists {MISSING_PACKAGE}, neither vendored" in str(caught.value)


def test_missing_packages_listed_together() -> None:
    bundle = Bundle({"app.py": APP, "requirements.txt": f"{MISSING_PACKAGE}\n{MISSING_PACKAGE}-two\n".encode()},
                    name="demo")

    with pytest.raises(BundleError, match=f"pip install --target ./demo {MISSING_PACKAGE} {MISSING_PACKAGE}-two"):
        check_requirements(bundle)


def test_vendored_package_passes() -> None:
    import_name = MISSING_PACKAGE.replace("-", "_")
    bundle = Bundle({"app.py": APP, "requirements.txt": f"{MISSING_PACKAGE}\n".encode(),
                     f"{import_name}/__init__.py": b"VALUE = 1\n"})

    assert check_requirements(bundle) == []


def test_vendored_by_dist_info_passes() -> None:
    bundle = Bundle({"app.py": APP, "requirements.txt": b"Odd.Name==2.0\n",
                     "odd_name-1.5.dist-info/METADATA": b"Name: Odd.Name\nVersion: 1.5\n",
                     "oddmodule/__init__.py": b""})

    warnings = check_requirements(bundle)

    assert warnings == ["requirements.txt line 1: Odd.Name is pinned to 2.0 but version 1.5 is the one the "
                        "enclave will import"]


def test_installed_package_passes() -> None:
    bundle = Bundle({"app.py": APP, "requirements.txt": f"numpy=={importlib.metadata.version('numpy')}\n".encode()})

    assert check_requirements(bundle) == []


def test_distribution_name_differs_from_import_name() -> None:
    pytest.importorskip("sklearn")
    bundle = Bundle({"app.py": APP, "requirements.txt": b"scikit_learn\n"})

    assert check_requirements(bundle) == []


def test_pin_mismatch_warns() -> None:
    bundle = Bundle({"app.py": APP, "requirements.txt": b"numpy==0.0.1\n"})

    warnings = check_requirements(bundle)

    assert len(warnings) == 1
    assert "numpy is pinned to 0.0.1" in warnings[0]
    assert importlib.metadata.version("numpy") in warnings[0]


def test_pin_with_trailing_zero_matches() -> None:
    version = importlib.metadata.version("numpy")
    bundle = Bundle({"app.py": APP, "requirements.txt": f"numpy=={version}.0\n".encode()})

    assert check_requirements(bundle) == []


def test_vendored_package_shadows_installed() -> None:
    bundle = Bundle({"app.py": APP, "requirements.txt": b"numpy\n", "numpy/__init__.py": b"fake = True\n"})

    warnings = check_requirements(bundle)

    assert len(warnings) == 1
    assert "'numpy' shadows the installed module" in warnings[0]


def test_module_shadowing_stdlib_warns() -> None:
    warnings = check_requirements(Bundle({"app.py": APP, "json.py": b"dumps = None\n"}))

    assert len(warnings) == 1
    assert "'json' shadows" in warnings[0]


def test_no_requirements_file_passes(tmp_path: Path) -> None:
    assert check_requirements(read_directory(make_app(tmp_path))) == []
