"""Command-line subcommands in the style of Cape's CLI: encrypt, checksum, function create, deploy, list, delete.

Each handler returns the exit status: 0 on success, 1 when the operation
fails (with one ``error:`` line on stderr), and 2 on usage errors, which
``parser.error`` reports as argparse does.
"""

from __future__ import annotations

import argparse
import errno
import io
import json
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfidentialNBError
from .sealing import MAGIC as SEALED_MAGIC
from .sealing import Sealed

if TYPE_CHECKING:
    from .bundles import Bundle
    from .csv_import import CsvImport
    from .keys import PublicKey
    from .policy import Policy
    from .results import RunResult

APP_TEMPLATE = '''\
"""A Cape-style function: the enclave calls cape_handler with the input bytes."""

import io

import pandas as pd


def cape_handler(input_bytes):
    """Parse the input as CSV and return its number of rows and its column names."""
    data = pd.read_csv(io.BytesIO(input_bytes))
    return {"rows": len(data), "columns": [str(name) for name in data.columns]}
'''

REQUIREMENTS_TEMPLATE = """\
# Packages app.py imports. Each must be installed where the enclave runs,
# or vendored into this folder with: pip install --target . PACKAGE
pandas
"""


def _parser(commands: Any, name: str, help_text: str, example: str) -> argparse.ArgumentParser:
    """Add a subcommand whose help ends with an example; handlers find it as ``arguments.command_parser``."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".",
        epilog=f"Example:\n{example}", formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(command_parser=parser)
    return parser


def add_function_commands(commands: Any) -> None:
    """Register ``encrypt``, ``checksum``, ``function``, ``deploy``, ``run``, ``test``, ``list`` and ``delete``."""
    _add_encrypt(commands)
    _add_checksum(commands)
    _add_function(commands)
    _add_deploy(commands)
    _add_run(commands)
    _add_test(commands)
    _add_list(commands)
    _add_delete(commands)


# encrypt ------------------------------------------------------------------------------------------


def _add_encrypt(commands: Any) -> None:
    encrypt = _parser(
        commands, "encrypt", "seal a file or a CSV table to the enclave's key",
        "  confidential-nb encrypt data.csv --frame --policy policy.json      # writes data.csv.sealed\n"
        "  confidential-nb encrypt data.csv --key enclave-key.json --expect-fingerprint 3f0c5e9a...  # no enclave needed\n"
        "  producer | confidential-nb encrypt - --out data.sealed",
    )
    encrypt.add_argument("file", metavar="FILE", help="the file to seal, or '-' for standard input")
    encrypt.add_argument("--key", type=Path, metavar="FILE",
                         help="seal to the key in FILE, a key file from 'confidential-nb key --out' or an attestation "
                              "document from 'confidential-nb attest --out', without any enclave on this machine; "
                              "needs --expect-fingerprint (default: the local enclave's attested key)")
    encrypt.add_argument("--expect-fingerprint", metavar="HEX",
                         help="64 hex digits: the enclave key's fingerprint that 'confidential-nb key' prints, sent "
                              "to you over a channel you trust; for an attestation document the platform fingerprint "
                              "also works. Sealing stops if the key does not match")
    encrypt.add_argument("--policy", type=Path, metavar="FILE",
                         help="JSON object with the policy fields, such as "
                              '{"allowed_functions": ["<checksum>"], "expires": "2027-01-31T00:00:00+00:00"} '
                              "(default: any code, the default limits)")
    encrypt.add_argument("--frame", action="store_true",
                         help="read FILE as CSV (guessing its format, with each guess on stderr) and seal the "
                              "DataFrame, so that runs get a DataFrame and its schema is visible")
    encrypt.add_argument("--out", metavar="FILE",
                         help="where to write the sealed data; '-' for standard output "
                              "(default: FILE.sealed, or standard output when FILE is '-')")
    encrypt.set_defaults(handler=_encrypt)


def _encrypt(arguments: argparse.Namespace) -> int:
    from .sealing import seal, seal_file

    parser: argparse.ArgumentParser = arguments.command_parser
    target = _encrypt_target(arguments, parser)
    expected = _expected_fingerprint(arguments, parser)
    policy = _read_policy(arguments.policy)
    key = _sealing_key(arguments.key, expected)

    report = sys.stderr if target is None else sys.stdout
    if arguments.frame:
        imported = _read_frame(arguments.file)
        for guess in imported.guesses:
            print(f"guess: {guess}", file=sys.stderr)
        sealed = seal(imported.frame, policy=policy, key=key)
        rows, columns = imported.frame.shape
        description = f"{rows} rows x {columns} columns"
    elif arguments.file != "-" and target is not None:
        # A file sealed into a file streams one chunk at a time, so its size is bounded by disk, not memory.
        sealed = seal_file(_checked_input(arguments.file), target, policy=policy, key=key)
        description = f"{sealed.plaintext_nbytes} bytes"
    else:
        # NOTE: standard input, or output to standard output, is sealed in memory, because the header
        # states the plaintext length before the first chunk.
        sealed = seal(_read_input(arguments.file), policy=policy, key=key)
        description = f"{sealed.plaintext_nbytes} bytes"

    if target is None:
        sys.stdout.buffer.write(bytes(sealed))
        sys.stdout.buffer.flush()
    elif sealed.path is None:
        sealed.save(target)
    destination = "standard output" if target is None else str(target)
    print(f"sealed {description} from {_source_name(arguments.file)} to enclave key {key.fingerprint[:16]}: {destination}",
          file=report)
    return 0


def _encrypt_target(arguments: argparse.Namespace, parser: argparse.ArgumentParser) -> Path | None:
    """Return the output path, or None for standard output, which must not be a terminal."""
    if arguments.out is None:
        target = None if arguments.file == "-" else Path(arguments.file + ".sealed")
    else:
        target = None if arguments.out == "-" else Path(arguments.out)

    if target is None and sys.stdout.isatty():
        parser.error("sealed data is binary, so it is not written to a terminal; pass --out FILE or redirect "
                     "standard output to a file")
    if target is not None and arguments.file != "-" and _same_file(Path(arguments.file), target):
        parser.error(f"--out {target} is the input file; choose another output file")
    return target


def _same_file(source: Path, target: Path) -> bool:
    try:
        return source.samefile(target)
    except OSError:
        return False


def _expected_fingerprint(arguments: argparse.Namespace, parser: argparse.ArgumentParser) -> str | None:
    from .sdk import check_fingerprint

    if arguments.key is not None and arguments.expect_fingerprint is None:
        parser.error("--key needs --expect-fingerprint HEX: a key file proves nothing by itself, so compare it "
                     "with the fingerprint the enclave's operator sent you ('confidential-nb key' prints it)")
    if arguments.expect_fingerprint is None:
        return None
    try:
        return check_fingerprint(arguments.expect_fingerprint)
    except ValueError as exc:
        parser.error(f"--expect-fingerprint: {exc}")


def _read_policy(path: Path | None) -> Policy:
    from .errors import PolicyError
    from .policy import Policy

    if path is None:
        return Policy()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"policy file {path} is not UTF-8 text") from exc
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise PolicyError(f"policy file {path} is not valid JSON ({exc}); write a JSON object of policy fields") from None
    try:
        return Policy.from_dict(document)
    except PolicyError as exc:
        raise PolicyError(f"invalid policy in {path}: {exc}") from None


def _sealing_key(key_file: Path | None, expected: str | None) -> PublicKey:
    from .client import ensure_public_key
    from .errors import AttestationError
    from .sdk import load_sealing_key

    if key_file is not None:
        assert expected is not None
        return load_sealing_key(key_file, expected)

    key = ensure_public_key()
    if expected is not None and key.fingerprint != expected:
        raise AttestationError(f"the local enclave key is {key.fingerprint}, not the expected {expected}; "
                               "check CONFIDENTIAL_NB_HOME or the fingerprint you were sent")
    return key


def _read_frame(source: str) -> CsvImport:
    from .csv_import import read_csv

    if source == "-":
        return read_csv(io.BytesIO(sys.stdin.buffer.read()))
    return read_csv(_checked_input(source))


def _read_input(source: str) -> bytes:
    if source == "-":
        return sys.stdin.buffer.read()
    return _checked_input(source).read_bytes()


def _checked_input(source: str) -> Path:
    """Return the input path, which must be a regular file, so that a directory or FIFO fails clearly."""
    path = Path(source)
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode):
        raise OSError(errno.EINVAL, "not a regular file; pass a file or '-' for standard input", source)
    return path


def _source_name(source: str) -> str:
    return "standard input" if source == "-" else source


# checksum -----------------------------------------------------------------------------------------


def _add_checksum(commands: Any) -> None:
    checksum = _parser(
        commands, "checksum", "print the checksum of an app folder, a zip file or a cell, for a policy's "
                              "allowed_functions",
        "  confidential-nb checksum ./app\n  confidential-nb checksum app.zip\n  confidential-nb checksum --cell train.py",
    )
    checksum.add_argument("path", nargs="?", metavar="DIR|ZIP", help="an app folder or a zip file of one")
    checksum.add_argument("--cell", type=Path, metavar="FILE",
                          help="a file holding the source of a %%%%cape cell (UTF-8); its cell checksum is printed")
    checksum.set_defaults(handler=_checksum)


def _checksum(arguments: argparse.Namespace) -> int:
    from .bundles import bundle_checksum
    from .functions import cell_checksum

    parser: argparse.ArgumentParser = arguments.command_parser
    if (arguments.path is None) == (arguments.cell is None):
        parser.error("give either an app folder or zip file, or --cell FILE")

    if arguments.cell is not None:
        try:
            source = arguments.cell.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            return _fail(f"cell file {arguments.cell} is not UTF-8 text")
        print(cell_checksum(source))
        return 0

    print(bundle_checksum(_read_bundle(arguments.path)))
    return 0


def _read_bundle(path: str) -> Bundle:
    """Load an app folder or zip file, naming both forms when the path does not exist."""
    from .bundles import read_bundle
    from .errors import BundleError

    if not Path(path).exists():
        raise BundleError(f"app folder or zip file {path!r} not found; pass a folder containing app.py or a zip of one")
    return read_bundle(path)


# function create ----------------------------------------------------------------------------------


def _add_function(commands: Any) -> None:
    function = _parser(commands, "function", "scaffold Cape-style functions",
                       "  confidential-nb function create word-count")
    actions = function.add_subparsers(title="actions", metavar="ACTION")
    create = _parser(actions, "create", "create a folder with an app.py template and a requirements.txt",
                     "  confidential-nb function create word-count && confidential-nb deploy word-count")
    create.add_argument("name", metavar="NAME",
                        help="the folder to create; its last component becomes the function's name on deploy")
    create.set_defaults(handler=_function_create)
    function.set_defaults(handler=_function_without_action)


def _function_without_action(arguments: argparse.Namespace) -> int:
    arguments.command_parser.error("choose an action: create NAME")
    return 2


def _function_create(arguments: argparse.Namespace) -> int:
    from .registry import FUNCTION_NAME

    folder = Path(arguments.name)
    if not FUNCTION_NAME.match(folder.name):
        return _fail(f"invalid function name {folder.name!r}: use 1 to 64 letters, digits, '.', '_' or '-', "
                     "starting with a letter or digit")
    if folder.exists() and not folder.is_dir():
        return _fail(f"{folder} exists and is not a folder; choose another name")
    if folder.is_dir() and any(folder.iterdir()):
        return _fail(f"folder {folder} exists and is not empty; choose another name or remove it")

    folder.mkdir(parents=True, exist_ok=True)
    _write_new(folder / "app.py", APP_TEMPLATE)
    _write_new(folder / "requirements.txt", REQUIREMENTS_TEMPLATE)
    print(f"created {folder / 'app.py'} and {folder / 'requirements.txt'}")
    print(f"deploy it with: confidential-nb deploy {folder}")
    return 0


def _write_new(path: Path, text: str) -> None:
    """Create `path`, failing if it appeared since the folder was checked."""
    with open(path, "x", encoding="utf-8") as handle:
        handle.write(text)


# deploy, list, delete -----------------------------------------------------------------------------


def _add_deploy(commands: Any) -> None:
    deploy = _parser(commands, "deploy", "check an app folder or zip file as a Cape app and record it as a function",
                     "  confidential-nb deploy ./word-count --name word-count")
    deploy.add_argument("path", metavar="DIR|ZIP", help="an app folder with app.py, or a zip file of one")
    deploy.add_argument("--name", help="the function's name (default: the folder's or zip's name)")
    deploy.set_defaults(handler=_deploy)


def _deploy(arguments: argparse.Namespace) -> int:
    from . import registry
    from .bundles import check_requirements, validate_cape_app

    bundle = _read_bundle(arguments.path)
    validate_cape_app(bundle)
    for warning in check_requirements(bundle):
        print(f"warning: {warning}", file=sys.stderr)

    ref = registry.deploy(bundle, arguments.name)
    print(f"Function ID: {ref.id}")
    print(f"Function Checksum: {ref.checksum}")
    print(f"Function Name: {ref.name}")
    return 0


def _add_input_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", nargs="?", metavar="INPUT", help="the input as text, when -f is not given")
    parser.add_argument("-f", "--file", metavar="FILE", help="the input file, sealed or plain (plain files are "
                                                             "sealed here first); - reads standard input")
    parser.add_argument("--timeout", type=float, metavar="SECONDS", help="stop the run after this many seconds")
    parser.add_argument("-o", "--output", choices=["plain", "json"], default="plain",
                        help="print the result as a Python literal (plain, default) or as JSON")


def _add_run(commands: Any) -> None:
    run = _parser(commands, "run", "run a deployed function's cape_handler on an input in the enclave",
                  "  confidential-nb run word-count -f data.csv\n"
                  "  confidential-nb run 3f9Qa1b2c3d4e5f6 -f data.csv.sealed --function-checksum 08a5afd2... -o json")
    run.add_argument("function", metavar="ID|NAME", help="the function's id, or a name (its latest deploy)")
    run.add_argument("--function-checksum", metavar="HEX", help="refuse to run unless the function has this checksum")
    _add_input_options(run)
    run.set_defaults(handler=_run)


def _add_test(commands: Any) -> None:
    test = _parser(commands, "test", "run an app folder or zip file's cape_handler without deploying it",
                   "  confidential-nb test ./word-count -f data.csv")
    test.add_argument("path", metavar="DIR|ZIP", help="an app folder with app.py, or a zip file of one")
    _add_input_options(test)
    test.set_defaults(handler=_test)


def _run(arguments: argparse.Namespace) -> int:
    from .progress import run_with_progress
    from .sdk import Client

    with Client().connect(arguments.function, function_checksum=arguments.function_checksum) as session:
        data = _run_input(arguments, session.enclave.public_key())
        result = run_with_progress(lambda progress: session.invoke(data, timeout=arguments.timeout, progress=progress))
    return _print_result(result, arguments.output)


def _test(arguments: argparse.Namespace) -> int:
    from .bundles import validate_cape_app
    from .client import Enclave
    from .progress import run_with_progress

    bundle = _read_bundle(arguments.path)
    validate_cape_app(bundle)
    with Enclave() as enclave:
        data = _run_input(arguments, enclave.public_key())
        result = run_with_progress(lambda progress: enclave.invoke(bundle, data, timeout=arguments.timeout,
                                                                   progress=progress))
    return _print_result(result, arguments.output)


def _run_input(arguments: argparse.Namespace, key: PublicKey) -> Sealed | None:
    """Return the run's input sealed to `key`: from -f FILE, -f - (standard input), INPUT text or nothing."""
    from .sdk import load_input_file
    from .sealing import seal

    parser: argparse.ArgumentParser = arguments.command_parser
    if arguments.file is not None and arguments.input is not None:
        parser.error("give the input either as INPUT or with -f FILE, not both")
    if arguments.file == "-":
        data = sys.stdin.buffer.read()
        if not data:
            raise ConfidentialNBError("standard input is empty; pipe the function's input data into the command")
        return Sealed(data) if data.startswith(SEALED_MAGIC) else seal(data, key=key)
    if arguments.file is not None:
        return load_input_file(_checked_input(arguments.file), key)
    if arguments.input is not None:
        return seal(arguments.input.encode(), key=key)
    return None


def _print_result(result: RunResult, output: str) -> int:
    """Print notices on standard error and the result as the last line of standard output."""
    receipt = result.receipt
    if receipt is not None:
        print(f"receipt verified (function {receipt.function_checksum[:12]})", file=sys.stderr)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    value = plain_value(result.value)
    print(json.dumps(value) if output == "json" else repr(value))
    return 0


def plain_value(value: Any) -> Any:
    """Return `value` with numpy and pandas values turned into plain Python numbers, lists and dicts for printing."""
    import numpy as np
    import pandas as pd

    if isinstance(value, dict):
        return {plain_value(key): plain_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_value(item) for item in value]
    if isinstance(value, np.ndarray):
        return plain_value(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.DataFrame):
        return plain_value(value.to_dict(orient="list"))
    if isinstance(value, pd.Series):
        return plain_value(value.tolist())
    return value


def _add_list(commands: Any) -> None:
    listing = _parser(commands, "list", "list the deployed functions, oldest first", "  confidential-nb list")
    listing.set_defaults(handler=_list)


def _list(arguments: argparse.Namespace) -> int:
    from .registry import list_deployments

    deployments = list_deployments()
    if not deployments:
        print("no deployed functions; deploy one with 'confidential-nb deploy DIR'", file=sys.stderr)
        return 0

    rows = [(item.ref.id, item.ref.name, item.ref.checksum[:16], item.created) for item in deployments]
    widths = [max(len(row[column]) for row in [("ID", "NAME", "CHECKSUM", "CREATED"), *rows]) for column in range(4)]
    for row in [("ID", "NAME", "CHECKSUM", "CREATED"), *rows]:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip())
    return 0


def _add_delete(commands: Any) -> None:
    delete = _parser(commands, "delete", "delete a deployed function by id or name", "  confidential-nb delete word-count")
    delete.add_argument("function", metavar="ID|NAME", help="the function's id, or a name (its latest deploy)")
    delete.set_defaults(handler=_delete)


def _delete(arguments: argparse.Namespace) -> int:
    from . import registry

    ref = registry.delete(arguments.function)
    print(f"deleted function {ref.id} ({ref.name})")
    return 0


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1
