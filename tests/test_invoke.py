"""Cape functions, ``cape_handler(input_bytes)``, invoked through the real monitor, zygote and runner processes."""

from __future__ import annotations

import hashlib
import os
import signal
import textwrap
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import confidential_nb
from processes import wait_until_no_runners
from confidential_nb import Enclave, Sealed
from confidential_nb.bundles import Bundle, bundle_checksum, read_bundle
from confidential_nb.datasets import load_breast_cancer
from confidential_nb.enclave.runner import plain_numbers
from confidential_nb.errors import (
    BundleError,
    EgressError,
    EnclaveError,
    EnclaveResourceError,
    EnclaveTimeoutError,
    EnclaveWarning,
    EncodingError,
    PolicyError,
    SealError,
    WrongKeyError,
)
from confidential_nb.functions import cell_checksum
from confidential_nb.keys import ensure_keys

# A from-scratch logistic regression as the Cape tutorials write it: the CSV bytes go to a file in the
# working directory, pandas reads them back with the index as the first column, which is dropped.
TUTORIAL_APP = '''\
import numpy as np
import pandas as pd


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def cape_handler(input_bytes):
    with open("data.csv", "w") as handle:
        handle.write(input_bytes.decode())
    frame = pd.read_csv("data.csv")
    frame = frame.drop(columns=frame.columns[0])

    labels = frame.pop("target").to_numpy(dtype=float)
    features = frame.to_numpy(dtype=float)
    features = (features - features.mean(axis=0)) / features.std(axis=0)

    order = np.random.default_rng(0).permutation(len(features))
    cut = int(0.67 * len(order))
    train, test = order[:cut], order[cut:]

    weights = np.zeros(features.shape[1])
    bias = 0.0
    for _ in range(300):
        error = sigmoid(features[train] @ weights + bias) - labels[train]
        weights -= 0.5 * features[train].T @ error / len(train)
        bias -= 0.5 * error.mean()

    predicted = sigmoid(features[test] @ weights + bias) >= 0.5
    accuracy = (predicted == labels[test]).mean()
    return {"accuracy": accuracy, "weights": weights.tolist(), "bias": bias}
'''


def make_app(root: Path, files: dict[str, str]) -> Bundle:
    """Write an app folder under `root` and load it as a bundle."""
    root.mkdir(parents=True)
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return read_bundle(root)


def handler_app(tmp_path: Path, body: str, **extra: str) -> Bundle:
    """Return a bundle whose app.py defines `cape_handler` with the given body."""
    source = "def cape_handler(input_bytes):\n" + textwrap.indent(textwrap.dedent(body), "    ")
    return make_app(tmp_path / "app", {"app.py": source, **extra})


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return make_app(tmp_path_factory.mktemp("tutorial") / "app", {"app.py": TUTORIAL_APP})


@pytest.fixture(scope="module")
def breast_cancer_csv() -> Sealed:
    # Written with to_csv's defaults, so the index is the first column, as in Cape's tutorial data.
    return confidential_nb.seal(load_breast_cancer().to_csv().encode())


@pytest.mark.parametrize("enclave_name", ["enclave", "unhooked_enclave"])
def test_invoke_cape_tutorial_trains_model(request, enclave_name, tutorial, breast_cancer_csv):
    enclave = request.getfixturevalue(enclave_name)
    run = enclave.invoke(tutorial, breast_cancer_csv)

    assert set(run.value) == {"accuracy", "weights", "bias"}
    assert type(run.value["accuracy"]) is float
    assert 0.9 < run.value["accuracy"] <= 1.0
    assert len(run.value["weights"]) == 30
    assert all(type(weight) is float for weight in run.value["weights"])
    assert type(run.value["bias"]) is float
    assert repr(run.value).startswith("{'accuracy': 0.")


def test_invoke_seeded_handler_is_deterministic(enclave, tutorial, breast_cancer_csv):
    first = enclave.invoke(tutorial, breast_cancer_csv)
    second = enclave.invoke(tutorial, breast_cancer_csv)
    assert first.value == second.value


def test_invoke_receipt_names_bundle_checksum(enclave, tutorial, breast_cancer_csv):
    run = enclave.invoke(tutorial, breast_cancer_csv)
    assert run.receipt.verify() is True
    assert run.receipt.function_checksum == bundle_checksum(tutorial)
    assert run.receipt.function_kind == "cape_function"
    assert run.receipt.body["inputs"] == {"input": breast_cancer_csv.digest}
    assert run.receipt.body["result_name"] == "return value"


def test_run_receipt_function_kind_is_cell(enclave):
    assert enclave.run("1").receipt.function_kind == "cell"


def test_invoke_writes_stay_in_private_copy(enclave, tmp_path):
    bundle = handler_app(tmp_path, """\
        import hashlib, os
        seen = {"state": os.path.exists("state.txt"), "app": hashlib.sha256(open("app.py", "rb").read()).hexdigest()}
        with open("state.txt", "w") as handle:
            handle.write("written by the first run")
        with open("app.py", "a") as handle:
            handle.write("# changed by the handler\\n")
        return seen
    """)
    original = dict(bundle.files)
    expected = {"state": False, "app": hashlib.sha256(bundle.files["app.py"]).hexdigest()}

    first = enclave.invoke(bundle)
    second = enclave.invoke(bundle)

    assert first.value == expected
    assert second.value == expected
    assert dict(bundle.files) == original
    assert second.receipt.function_checksum == first.receipt.function_checksum == bundle_checksum(bundle)


def test_invoke_working_directory_is_app_copy(enclave, tmp_path):
    bundle = handler_app(tmp_path, """\
        import os
        return {"files": sorted(os.listdir(".")), "data": open("model/weights.txt").read()}
    """, **{"model/weights.txt": "1 2 3"})
    run = enclave.invoke(bundle)
    assert run.value == {"files": ["app.py", "model"], "data": "1 2 3"}


def test_invoke_vendored_package_importable(enclave, tmp_path):
    bundle = handler_app(tmp_path, """\
        import os
        import vendored_helper
        inside = os.path.dirname(vendored_helper.__file__) == os.path.join(os.getcwd(), "vendored_helper")
        return {"value": vendored_helper.answer(), "inside": inside}
    """, **{"vendored_helper/__init__.py": "def answer():\n    return 42\n"})
    assert enclave.invoke(bundle).value == {"value": 42, "inside": True}


def test_invoke_loads_app_py_not_app_package(enclave, tmp_path):
    bundle = handler_app(tmp_path, "return 'app.py'\n", **{"app/__init__.py": "def cape_handler(data):\n    return 'package'\n"})
    assert enclave.invoke(bundle).value == "app.py"


def test_invoke_preloaded_module_shadowing_warns(enclave, tmp_path):
    bundle = handler_app(tmp_path, """\
        import os
        import numpy
        return numpy.__file__.startswith(os.getcwd())
    """, **{"numpy/__init__.py": "raise ImportError('the vendored copy was imported')\n"})
    with pytest.warns(EnclaveWarning, match="bundle's 'numpy' is not used"):
        run = enclave.invoke(bundle)
    assert run.value is False


def test_invoke_without_input_gets_empty_bytes(enclave, tmp_path):
    bundle = handler_app(tmp_path, "return [type(input_bytes).__name__, len(input_bytes)]\n")
    run = enclave.invoke(bundle)
    assert run.value == ["bytes", 0]
    assert run.receipt.body["inputs"] == {}


def test_invoke_bytes_input_arrives_unchanged(enclave, tmp_path):
    payload = os.urandom(5000)
    bundle = handler_app(tmp_path, "import hashlib\nreturn hashlib.sha256(input_bytes).hexdigest()\n")
    run = enclave.invoke(bundle, confidential_nb.seal(payload))
    assert run.value == hashlib.sha256(payload).hexdigest()


def test_invoke_frame_input_arrives_as_csv(enclave, tmp_path):
    frame = pd.DataFrame({"x": [1.5, 2.5, 3.5, 4.5], "label": [0, 1, 0, 1]}, index=[10, 11, 12, 13])
    bundle = handler_app(tmp_path, "import hashlib\nreturn hashlib.sha256(input_bytes).hexdigest()\n")
    run = enclave.invoke(bundle, confidential_nb.seal(frame))
    assert run.value == hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()


def test_invoke_file_backed_input(enclave, tmp_path):
    payload = b"a,b\n1,2\n"
    path = confidential_nb.seal(payload).save(tmp_path / "data.sealed")
    bundle = handler_app(tmp_path, "return len(input_bytes)\n")
    assert enclave.invoke(bundle, Sealed.load(path)).value == len(payload)


def test_invoke_handler_exception_reports_app_line(enclave, tmp_path):
    bundle = handler_app(tmp_path, """\
        values = [1, 2]
        secret = "secret-text-123"
        raise ValueError(secret)
    """)
    with pytest.raises(EnclaveError, match="ValueError at line 4 of app.py") as caught:
        enclave.invoke(bundle)
    assert caught.value.exception_type == "ValueError"
    assert caught.value.line == 4
    assert "secret-text-123" not in str(caught.value)
    assert enclave.invoke(handler_app(tmp_path / "next", "return 1\n")).value == 1


def test_invoke_exception_in_vendored_module_reports_call_line(enclave, tmp_path):
    bundle = handler_app(tmp_path, """\
        import helper
        total = 0
        return helper.divide(1, total)
    """, **{"helper.py": "\n\n\n\n\n\n\n\n\n\ndef divide(a, b):\n    return a / b\n"})
    with pytest.raises(EnclaveError) as caught:
        enclave.invoke(bundle)
    assert caught.value.exception_type == "ZeroDivisionError"
    assert caught.value.line == 4


def test_invoke_import_time_exception_reports_line(enclave, tmp_path):
    source = "import os\n\nos.environ['MISSING_VARIABLE']\n\ndef cape_handler(input_bytes):\n    return 1\n"
    bundle = make_app(tmp_path / "app", {"app.py": source})
    with pytest.raises(EnclaveError, match="KeyError at line 3 of app.py"):
        enclave.invoke(bundle)


def test_invoke_compile_error_reports_line(enclave, tmp_path):
    # ast.parse accepts a module-level return, so the bundle check passes and compiling fails.
    source = "x = 1\nreturn x\n\ndef cape_handler(input_bytes):\n    return 1\n"
    bundle = make_app(tmp_path / "app", {"app.py": source})
    with pytest.raises(EnclaveError, match="SyntaxError at line 2 of app.py") as caught:
        enclave.invoke(bundle)
    assert caught.value.line == 2


@pytest.mark.parametrize("body", ["return object()\n", "return {'handle': open('app.py')}\n", "return {1, 2}\n"])
def test_invoke_unsupported_return_type(enclave, tmp_path, body):
    with pytest.raises(EncodingError, match="cannot cross the enclave boundary"):
        enclave.invoke(handler_app(tmp_path, body))


def test_invoke_timeout_then_usable(enclave, tmp_path):
    with pytest.raises(EnclaveTimeoutError, match="timeout of 1.5 seconds"):
        enclave.invoke(handler_app(tmp_path, "while True:\n    pass\n"), timeout=1.5)
    assert enclave.invoke(handler_app(tmp_path / "next", "return 'alive'\n")).value == "alive"


def test_invoke_memory_limit_raises_resource_error(enclave, tmp_path):
    bundle = handler_app(tmp_path, "import numpy\nblock = numpy.ones(4 * 1024**3 // 8)\nreturn 1\n")
    with pytest.raises(EnclaveResourceError, match="out of memory at its limit of 2.0 GiB"):
        enclave.invoke(bundle, memory="2G")


def test_invoke_interrupt_stops_run_and_keeps_enclave(key_home, tmp_path):
    bundle = handler_app(tmp_path, "import time\ntime.sleep(60)\n")
    with Enclave(key_home) as local:
        first_pid = local.status()["monitor_pid"]
        timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        with pytest.raises(KeyboardInterrupt, match="stays up for the next run"):
            local.invoke(bundle)
        timer.join()

        assert wait_until_no_runners(local.status()["zygote_pid"])
        assert local.invoke(handler_app(tmp_path / "next", "return 'back'\n")).value == "back"
        assert local.status()["monitor_pid"] == first_pid


def test_invoke_policy_allows_bundle_checksum(enclave, tutorial):
    sealed = confidential_nb.seal(load_breast_cancer().to_csv().encode(),
                                  policy={"allowed_functions": [bundle_checksum(tutorial)]})
    assert len(enclave.invoke(tutorial, sealed).value["weights"]) == 30


@pytest.mark.parametrize("approved", ["0" * 64, "cell checksum of app.py"])
def test_invoke_policy_rejects_other_checksum(enclave, tutorial, approved):
    if approved == "cell checksum of app.py":
        approved = cell_checksum(tutorial.files["app.py"].decode())
    sealed = confidential_nb.seal(b"a,b\n1,2\n", policy={"allowed_functions": [approved]})
    with pytest.raises(PolicyError, match=bundle_checksum(tutorial)):
        enclave.invoke(tutorial, sealed)


def test_invoke_rejects_wrong_key_input(enclave, tutorial, tmp_path):
    stranger = ensure_keys(tmp_path / "stranger")
    sealed = confidential_nb.seal(b"a,b\n1,2\n", key=stranger.public)
    with pytest.raises(WrongKeyError, match="does not hold"):
        enclave.invoke(tutorial, sealed)


def test_invoke_rejects_tampered_input(enclave, tutorial):
    tampered = bytearray(bytes(confidential_nb.seal(b"a,b\n1,2\n")))
    tampered[len(tampered) // 2] ^= 0x01
    with pytest.raises(SealError, match="failed authentication"):
        enclave.invoke(tutorial, Sealed(bytes(tampered)))


def test_invoke_egress_guard_rejects_all_rows(enclave, tmp_path, breast_cancer_csv):
    bundle = handler_app(tmp_path, """\
        import io
        import pandas as pd
        return pd.read_csv(io.BytesIO(input_bytes)).to_numpy().tolist()
    """)
    with pytest.raises(EgressError):
        enclave.invoke(bundle, breast_cancer_csv)


def test_invoke_egress_guard_rejects_raw_bytes(enclave, tmp_path, breast_cancer_csv):
    with pytest.raises(EgressError):
        enclave.invoke(handler_app(tmp_path, "return input_bytes\n"), breast_cancer_csv)


def test_invoke_rejects_bundle_without_handler(enclave):
    with pytest.raises(BundleError, match="does not define a top-level function cape_handler"):
        enclave.invoke(Bundle({"app.py": b"def handler(data):\n    return 1\n"}))


def test_invoke_rejects_bundle_without_app(enclave):
    with pytest.raises(BundleError, match="no app.py"):
        enclave.invoke(Bundle({"main.py": b"def cape_handler(data):\n    return 1\n"}))


def test_invoke_argument_types_checked(enclave, tutorial):
    with pytest.raises(TypeError, match="must be a Bundle"):
        enclave.invoke("./app")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a Sealed"):
        enclave.invoke(tutorial, b"plain bytes")  # type: ignore[arg-type]


def test_invoke_debug_run_returns_message(debug_enclave, tmp_path):
    bundle = handler_app(tmp_path, "print('visible')\nraise ValueError('shown in debug')\n")
    sealed = confidential_nb.seal(b"x", policy={"allow_debug": True})
    with pytest.raises(EnclaveError, match="ValueError at line 3 of app.py: shown in debug") as caught:
        debug_enclave.invoke(bundle, sealed)
    assert "visible" in str(caught.value)


def test_plain_numbers_converts_nested_numpy_scalars():
    value = {np.int64(1): [np.float64(0.5), (np.bool_(True), np.float32(2.0))], "array": np.arange(3)}
    converted = plain_numbers(value)
    assert converted[1] == [0.5, (True, 2.0)]
    assert type(list(converted)[0]) is int
    assert type(converted[1][0]) is float
    assert type(converted[1][1][0]) is bool
    assert type(converted[1][1][1]) is float
    assert type(converted["array"]) is np.ndarray


def test_plain_numbers_leaves_cycles_for_encoder():
    cyclic: list[object] = [np.int64(1)]
    cyclic.append(cyclic)
    converted = plain_numbers(cyclic)
    assert type(converted[0]) is int
    assert converted[1] is cyclic


def test_plain_numbers_visits_shared_containers_once():
    shared: list[object] = [np.float64(1.0)]
    for _ in range(200):
        shared = [shared, shared]
    converted = plain_numbers(shared)
    assert converted[0] is converted[1]
