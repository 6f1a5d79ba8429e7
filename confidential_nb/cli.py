"""The ``confidential-nb`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .cli_functions import add_function_commands
from .cli_trust import add_trust_commands
from .errors import ConfidentialNBError

FIGURE_FORMATS = frozenset({".png", ".pdf", ".svg", ".jpg", ".jpeg"})

DEMO_CELL = """\
from confidential_nb.training import LogisticRegression, train_test_split

X_train, X_test, y_train, y_test = train_test_split(data, target="target", test_size=0.33, random_state=0)
model = LogisticRegression(epochs=epochs).fit(X_train, y_train, validation_data=(X_test, y_test))
result = {"accuracy": model.score(X_test, y_test), "model": model}
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    arguments = parser.parse_args(argv)
    if not hasattr(arguments, "handler"):
        parser.print_help()
        return 2
    try:
        return int(arguments.handler(arguments))
    except ConfidentialNBError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc.strerror or exc} ({exc.filename or 'no file'}); check the path and CONFIDENTIAL_NB_HOME", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="confidential-nb",
        description="Seal data, run code on it in a local enclave process, and get back only the results.",
    )
    commands = parser.add_subparsers(title="commands")

    demo = commands.add_parser("demo", help="seal the bundled breast-cancer data and train a model on it in the enclave",
                               epilog="Example:\n  confidential-nb demo --out curves.png --epochs 100",
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_argument("--out", type=Path, default=Path("curves.png"), help="where to write the loss and accuracy curves (PNG; default: ./curves.png)")
    demo.add_argument("--epochs", type=int, default=300, help="gradient-descent epochs (default: 300)")
    demo.set_defaults(handler=_demo)

    status = commands.add_parser("status", help="start the enclave if needed and print its status",
                                 epilog="Example:\n  confidential-nb status --json",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    status.set_defaults(handler=_status)

    add_trust_commands(commands)
    add_function_commands(commands)
    return parser


def _demo(arguments: argparse.Namespace) -> int:
    from . import Enclave, seal
    from .datasets import load_breast_cancer
    from .progress import run_with_progress

    if arguments.epochs <= 0:
        print(f"error: invalid --epochs {arguments.epochs}: expected a positive number", file=sys.stderr)
        return 2
    problem = _check_figure_path(arguments.out)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2

    frame = load_breast_cancer()
    sealed = seal(frame)
    print(f"sealed {len(frame)} rows x {frame.shape[1]} columns to enclave key {sealed.recipient[:16]}")
    del frame

    with Enclave() as enclave:
        run = run_with_progress(lambda progress: enclave.run(DEMO_CELL, inputs={"data": sealed},
                                                             params={"epochs": arguments.epochs}, progress=progress))
    model = run.value["model"]
    print(f"test accuracy: {run.value['accuracy']:.4f}")
    print(f"epochs: {len(model.history_)}")

    figure = run.plot(title="Breast cancer, logistic regression trained in the enclave")
    figure.savefig(arguments.out, dpi=100)
    print(f"curves: {arguments.out}")
    print(f"receipt verified: {run.receipt is not None and run.receipt.verify()}")
    return 0


def _check_figure_path(path: Path) -> str | None:
    """Return what is wrong with `path` as the demo's figure file, or None."""
    if path.is_dir():
        return f"--out {path} is a directory; give a file name such as {path / 'curves.png'}"
    if path.suffix.lower() not in FIGURE_FORMATS:
        return f"--out {path} has no supported image extension; use one of {', '.join(sorted(FIGURE_FORMATS))}"
    if not path.parent.is_dir():
        return f"directory {path.parent} for --out does not exist; create it first"
    return None


def _status(arguments: argparse.Namespace) -> int:
    from . import Enclave
    from .sandbox import describe_layers

    with Enclave() as enclave:
        status = enclave.status()
    if arguments.json:
        print(json.dumps(status, indent=2, sort_keys=True))
        return 0
    layers = status.pop("layers", {})
    for name, value in status.items():
        print(f"{name}: {value}")
    print("sandbox layers:")
    for line in describe_layers(layers):
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
