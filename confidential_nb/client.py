"""The host side: start the enclave, verify its attestation, send runs, check receipts.

`Enclave` starts the monitor as ``python -I -m confidential_nb.enclave`` in
its own session with its standard streams on /dev/null, talks to it over an
inherited socket, and verifies a fresh attestation before the first run.
Nothing here ever loads a private key.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import errors
from .enclave.run_slots import RunSlots
from .input_handles import InputHandles
from .keys import SERVICE_USER_VARIABLE, PublicKey, home_dir, load_public_key
from .protocol import OutgoingAttachment, ProtocolError, recv_message, send_fd, send_message
from .sandbox import clean_environment

if TYPE_CHECKING:
    from .attestation import AttestationDocument
    from .background import BackgroundRun
    from .bundles import Bundle
    from .results import RunResult
    from .sealing import Sealed

log = logging.getLogger("confidential_nb.client")

# Seconds the host waits beyond a run's own timeout before it gives up on the monitor.
_HOST_GRACE_SECONDS = 30.0
_START_TIMEOUT_SECONDS = 60.0
_RESERVED_NAMES = frozenset({"result", "__builtins__", "__name__"})
# How long sending the cancel message of an interrupted run may take before its channel is dropped anyway.
_CANCEL_WAIT_SECONDS = 1.0
# How often a waiting run checks its cancel event.
_CANCEL_POLL_SECONDS = 0.1
# While a run waits for a core, the monitor sends a notice every few seconds; this much silence means it hung.
_QUEUED_SILENCE_SECONDS = 30.0
# The maximum number of runs of one Enclave that have a run channel at once. More wait in the host,
# so that a burst of submits cannot use up the monitor's descriptors and threads.
_MAX_OPEN_RUNS = 64
# The maximum number of idle run channels kept for reuse; the others are closed.
_MAX_IDLE_CHANNELS = 8
# How long a broken run channel's monitor gets to exit before the enclave is taken to be still up.
_EXIT_WAIT_SECONDS = 0.5

ProgressCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class _RunHooks:
    """The callbacks, cancel event and enclave generation that a caller attaches to one run.

    With `since`, the run fails if the enclave was closed after that generation began.
    """

    progress: ProgressCallback | None = None
    cancel: threading.Event | None = None
    since: int | None = None
    queued: Callable[[bool], None] | None = None


_NO_HOOKS = _RunHooks()

_ERROR_KINDS: dict[str, type[errors.ConfidentialNBError]] = {
    "exception": errors.EnclaveError,
    "timeout": errors.EnclaveTimeoutError,
    "resource": errors.EnclaveResourceError,
    "crash": errors.EnclaveResourceError,
    "seal": errors.SealError,
    "wrong_key": errors.WrongKeyError,
    "policy": errors.PolicyError,
    "egress": errors.EgressError,
    "encoding": errors.EncodingError,
    "bundle": errors.BundleError,
    "cancelled": errors.RunCancelledError,
    "protocol": errors.ProtocolError,
    "unknown_handle": errors.InputHandleError,
}

# The name under which a Cape function's input appears in its receipt.
CAPE_INPUT_NAME = "input"


def _monitor_command(home: Path, *extra: str, service_user: str | None = None) -> list[str]:
    """Return the monitor's command line; `service_user` (default: the environment's) turns on service-account mode."""
    account = service_user if service_user is not None else os.environ.get(SERVICE_USER_VARIABLE)
    options = ["--service-user", account] if account else []
    return [sys.executable, "-I", "-m", "confidential_nb.enclave", "--home", str(home), *options, *extra]


def ensure_public_key(home: Path | None = None, service_user: str | None = None) -> PublicKey:
    """Return the key home's enclave public key, creating the keys with a one-shot enclave if needed."""
    resolved = home or home_dir()
    try:
        public = load_public_key(resolved)
    except FileNotFoundError:
        pass
    else:
        _check_platform_pin(resolved)
        return public

    log.info("creating the enclave keys in %s", resolved)
    # The one-shot enclave's stderr carries only its own error message, which is shown to the user.
    completed = subprocess.run(
        _monitor_command(resolved, "--init-keys", service_user=service_user),
        env=clean_environment(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        timeout=_START_TIMEOUT_SECONDS, check=False,
    )
    if completed.returncode != 0:
        detail = completed.stderr.decode(errors="replace").strip()[-2000:]
        raise errors.KeyHomeError(detail or f"the enclave failed to create its keys in {resolved} "
                                            f"(exit status {completed.returncode}); check that the directory is writable")
    return load_public_key(resolved)


def _check_platform_pin(home: Path) -> None:
    """Raise `AttestationError` when the key home's platform is not the one pinned there."""
    from .attestation import load_pins
    from .platform import certificate_fingerprint, load_certificate

    pins = load_pins(home)
    if pins is None:
        return
    actual = certificate_fingerprint(load_certificate(home / "platform"))
    if actual != pins.platform_fingerprint:
        raise errors.AttestationError(
            f"the key home's platform certificate {actual[:16]} is not the pinned platform "
            f"{pins.platform_fingerprint[:16]}; refusing to seal to its key"
        )


class Enclave:
    """Host handle of one enclave (a monitor process and its zygote).

    The monitor starts on first use and stays up until `close`, the end of a
    ``with`` block, or the end of the Python process. With ``debug=True`` it
    is a debug enclave: a separate monitor whose attestation documents carry
    the debug flag and their own measurements, pinned apart from the normal
    enclave's. It serves only debug runs, which return printed output and
    exception messages, and only on inputs whose policy allows debug.

    ``service_user`` (default: ``$CONFIDENTIAL_NB_SERVICE_USER``; an empty
    string turns it off) names the account the monitor switches to after it
    loads the keys, which it gives to that account. The enclave must then
    start as root.

    ``input_cache_bytes`` (default: ``$CONFIDENTIAL_NB_INPUT_CACHE_BYTES``,
    else a quarter of physical memory, at most 4 GiB; 0 turns it off)
    bounds the monitor's cache of opened inputs. A `Sealed` held in memory
    is sent once; later runs that pass the same object name the monitor's
    handle for it instead. File-backed inputs are read by path on every run.
    """

    def __init__(self, home: str | os.PathLike[str] | None = None, *, debug: bool = False, audit_hook: bool = True,
                 service_user: str | None = None, input_cache_bytes: int | None = None) -> None:
        self.home = Path(home).resolve() if home is not None else home_dir()
        self.debug = debug
        # The audit hook is a last line inside the runner; turning it off (to test the outer layers) changes PCR 2.
        self.audit_hook = audit_hook
        self.service_user = service_user
        self.input_cache_bytes = _input_cache_bytes(input_cache_bytes)
        self._input_handles = InputHandles()
        self._process: subprocess.Popen[bytes] | None = None
        self._channel: socket.socket | None = None
        # Run channels not in use, of the monitor started `_generation`-th; each run takes one.
        self._idle_channels: list[socket.socket] = []
        self._generation = 0
        # Why the monitor of each recent generation ended, for the runs it cut short.
        self._end_reasons: dict[int, str] = {}
        self._key: PublicKey | None = None
        self._document: AttestationDocument | None = None
        self._lock = threading.Lock()
        self._open_runs = RunSlots(_MAX_OPEN_RUNS)
        self._finalizer = weakref.finalize(self, _stop_process, None, None)

    def __repr__(self) -> str:
        kind = "debug enclave" if self.debug else "enclave"
        process = self._process
        state = f"running as pid {process.pid}" if process is not None and process.poll() is None else "not started"
        return f"<Enclave ({kind}) on {self.home}: {state}>"

    def __enter__(self) -> Enclave:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None) -> None:
        self.close()

    # Lifecycle

    def start(self) -> None:
        """Start the monitor and verify its attestation, unless it is already running."""
        with self._lock:
            self._start_locked()

    def _start_locked(self) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        ensure_public_key(self.home, self.service_user)

        ours, theirs = socket.socketpair()
        # An interrupt between the monitor's start and the next line would leave it running unseen by close().
        with _interrupts_deferred():
            process = subprocess.Popen(
                _monitor_command(self.home, "--fd", str(theirs.fileno()), "--host-pid", str(os.getpid()),
                                 *(["--debug"] if self.debug else []),
                                 *([] if self.audit_hook else ["--no-audit-hook"]),
                                 "--input-cache-bytes", str(self.input_cache_bytes), service_user=self.service_user),
                pass_fds=(theirs.fileno(),), env=clean_environment(), start_new_session=True,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            theirs.close()
            self._process, self._channel = process, ours
            self._finalizer.detach()
            self._finalizer = weakref.finalize(self, _stop_process, process, ours)
        log.info("%s monitor started as pid %d", "debug enclave" if self.debug else "enclave", process.pid)

        try:
            self._await_hello()
            self._key = self._verify_attestation()
        except BaseException:
            self._close_locked("start")
            raise

    def _await_hello(self) -> None:
        """Wait for the monitor's first message, which reports a key home it cannot use."""
        assert self._channel is not None
        self._channel.settimeout(_START_TIMEOUT_SECONDS)
        try:
            hello, _ = recv_message(self._channel)
        except (ProtocolError, OSError) as exc:
            raise errors.EnclaveError(f"the enclave failed to start ({exc}); see {self.home / 'enclave.log'}") from None
        if not hello.get("ok"):
            raise errors.KeyHomeError(str(hello.get("message")))

    def _verify_attestation(self) -> PublicKey:
        """Verify a fresh attestation against the key home's pins, pinning them on first use.

        The normal and the debug enclave each have their own pinned measurements.
        """
        from .attestation import Pins, load_pins
        from .platform import certificate_fingerprint, load_certificate

        nonce = secrets.token_hex(32)
        document = self._attest_locked(nonce)
        pins = load_pins(self.home)
        if pins is None:
            # Trust on first use: the platform certificate in the key home and these measurements.
            pins = Pins(certificate_fingerprint(load_certificate(self.home / "platform")), None)
        pinned = pins.measurements_for(self.debug)
        key = document.verify(nonce=nonce, platform_fingerprint=pins.platform_fingerprint, expected=pinned,
                              allow_debug=self.debug)
        if self.debug and not document.debug:
            raise errors.AttestationError("the debug enclave's attestation document does not carry the debug flag")
        if pinned is None:
            _pin_measurements(self.home, pins.platform_fingerprint, self.debug, document.measurements)
        self._document = document

        expected = load_public_key(self.home)
        if key.fingerprint != expected.fingerprint:
            raise errors.AttestationError(
                f"the enclave attests key {key.fingerprint[:16]}, but the key home's current key is "
                f"{expected.fingerprint[:16]}; restart the enclave"
            )
        return key

    def close(self) -> None:
        """Stop the monitor (and with it the zygote and any runner)."""
        with self._lock:
            self._close_locked()

    def _close_locked(self, reason: str = "closed") -> None:
        """Stop the monitor; `reason` (a key of `_END_MESSAGES`) picks the error of the runs it cuts short."""
        process, channel = self._process, self._channel
        self._process = self._channel = None
        self._end_reasons[self._generation] = reason
        for old in [generation for generation in self._end_reasons if generation < self._generation - 16]:
            del self._end_reasons[old]
        self._generation += 1
        for idle in self._idle_channels:
            idle.close()
        self._idle_channels.clear()
        self._finalizer.detach()
        _stop_process(process, channel)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # Requests

    def _request(self, header: dict[str, Any], timeout: float, descriptor: int | None = None) -> dict[str, Any]:
        """Send one control request (with `descriptor`, if given) and return its reply; on a failure, stop the monitor."""
        assert self._channel is not None
        try:
            self._channel.settimeout(timeout)
            send_fd(self._channel, header, descriptor)
            reply, _ = recv_message(self._channel)
            return reply
        except TimeoutError:
            self._close_locked("timeout")
            raise errors.EnclaveTimeoutError(
                f"the enclave did not respond within {timeout:g} seconds and was restarted; try again"
            ) from None
        except (ProtocolError, OSError) as exc:
            self._close_locked("stopped")
            raise errors.EnclaveError(
                f"the enclave process stopped unexpectedly ({exc}); it restarts on the next run, see {self.home / 'enclave.log'}"
            ) from None
        except BaseException:
            # An interrupt leaves the channel mid-message, so the monitor cannot be reused.
            self._close_locked("interrupted")
            raise

    # Run channels

    def _take_channel(self, since: int | None = None) -> tuple[socket.socket, int]:
        """Start the monitor if needed and return an idle run channel, or a new one, with its monitor's generation.

        With `since`, raise instead when the enclave was closed after that generation began.
        """
        with self._lock:
            if since is not None and since != self._generation:
                raise self._ended_error(since)
            self._start_locked()
            if self._idle_channels:
                return self._idle_channels.pop(), self._generation
            ours, theirs = socket.socketpair()
            try:
                # An interrupt in the middle of this short request would leave the control channel out of step,
                # which closes the enclave and every run in it.
                with _interrupts_deferred():
                    reply = self._request({"op": "channel"}, _START_TIMEOUT_SECONDS, theirs.fileno())
            except BaseException:
                ours.close()
                raise
            finally:
                theirs.close()
            if not reply.get("ok"):
                ours.close()
                raise errors.EnclaveResourceError(f"the enclave rejected a new run channel: {reply.get('message')}")
            return ours, self._generation

    def _return_channel(self, channel: socket.socket, generation: int) -> None:
        with self._lock:
            if generation == self._generation and self.running and len(self._idle_channels) < _MAX_IDLE_CHANNELS:
                self._idle_channels.append(channel)
                return
        channel.close()

    def _monitor_failed(self, generation: int, exc: BaseException) -> errors.EnclaveError:
        """Return the error for a run whose channel broke, and stop the monitor if it died and was not restarted meanwhile.

        A monitor that is still up (it may have run out of descriptors for
        this one run) stays up, so the other runs go on.
        """
        with self._lock:
            if generation != self._generation:
                return self._ended_error(generation)
            process = self._process
        if process is not None and not _exits_within(process, _EXIT_WAIT_SECONDS):
            log.warning("a run channel failed while the monitor %d stays up: %s", process.pid, exc)
            return errors.EnclaveError(f"the connection to the enclave for this run failed ({exc}); the enclave "
                                       f"stays up, so run it again, and see {self.home / 'enclave.log'}")
        with self._lock:
            if generation == self._generation:
                self._close_locked("stopped")
        return errors.EnclaveError(
            f"the enclave process stopped unexpectedly ({exc}); it restarts on the next run, see {self.home / 'enclave.log'}"
        )

    def _ended_error(self, generation: int) -> errors.EnclaveError:
        """Return the error for a run cut short because the monitor of `generation` ended."""
        message = _END_MESSAGES[self._end_reasons.get(generation, "closed")]
        return errors.EnclaveError(message.format(log=self.home / "enclave.log"))

    def _attest_locked(self, nonce: str, user_data: str | None = None) -> AttestationDocument:
        from .attestation import AttestationDocument

        header = self._request({"op": "attest", "nonce": nonce, "user_data": user_data}, _START_TIMEOUT_SECONDS)
        if not header.get("ok"):
            raise errors.AttestationError(f"the enclave failed to attest: {header.get('message')}")
        return AttestationDocument.from_dict(header.get("document"))

    def attest(self, nonce: str | bytes | None = None, user_data: str | None = None) -> AttestationDocument:
        """Return a fresh attestation document over `nonce` (hex or bytes; random if None).

        `user_data`, at most 1024 characters, is signed into the document as
        Nitro's user data field is, for example to bind a session to it.
        """
        text = nonce.hex() if isinstance(nonce, bytes) else (nonce or secrets.token_hex(32))
        with self._lock:
            self._start_locked()
            return self._attest_locked(text, user_data)

    def attestation(self) -> AttestationDocument:
        """Return the attestation document verified when this enclave started."""
        with self._lock:
            self._start_locked()
            assert self._document is not None
            return self._document

    def public_key(self) -> PublicKey:
        """Return the enclave's attested public key (starting the enclave if needed)."""
        with self._lock:
            self._start_locked()
            assert self._key is not None
            return self._key

    def status(self) -> dict[str, Any]:
        """Return the monitor's pid, key fingerprint, run count, active sandbox layers and input cache figures."""
        from .limits import DEFAULT_MEMORY_BYTES, DEFAULT_TIMEOUT_SECONDS

        with self._lock:
            self._start_locked()
            header = self._request({"op": "status"}, _START_TIMEOUT_SECONDS)
            assert self._process is not None and self._key is not None
            return {
                "running": True,
                "debug": self.debug,
                "monitor_pid": self._process.pid,
                "zygote_pid": header.get("zygote_pid"),
                "runs": header.get("runs"),
                "key_fingerprint": self._key.fingerprint,
                "measurements": self._document.measurements if self._document is not None else {},
                "kem": self._key.kem,
                "home": str(self.home),
                "default_timeout_seconds": DEFAULT_TIMEOUT_SECONDS,
                "default_memory_bytes": DEFAULT_MEMORY_BYTES,
                "layers": header.get("layers", {}),
                "service_account": header.get("service_account"),
                "active_runs": header.get("active_runs"),
                "waiting_runs": header.get("waiting_runs"),
                "max_parallel_runs": header.get("max_parallel_runs"),
                "input_cache": header.get("input_cache"),
            }

    def run(
        self,
        source: str,
        inputs: Mapping[str, Sealed] | None = None,
        params: Mapping[str, object] | None = None,
        *,
        timeout: float | None = None,
        memory: int | str | None = None,
        debug: bool = False,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> RunResult:
        """Run `source` in a fresh runner with `inputs` unsealed and `params` bound by name.

        The value is the variable ``result`` when the source sets it, else its
        last expression. Defaults: a 10-minute timeout, and a memory limit of
        4 GiB or 4x the sealed inputs, whichever is larger. Every run of a
        debug enclave is a debug run; a normal enclave rejects ``debug=True``
        with a `PolicyError`.

        While the library's models train, `progress` is called with each
        progress record the enclave sends: a dict with ``model``, ``epoch``,
        ``epochs``, ``loss`` and ``accuracy``. Setting the `cancel` event, or
        interrupting the thread that waits here (Ctrl-C, the notebook's stop
        button), stops the run: the former raises `RunCancelledError`, the
        latter `KeyboardInterrupt`, and the enclave stays up for the next run.
        Runs from several threads go on in parallel, one per core.
        """
        resolved = inputs or {}

        def build(handles: Mapping[str, str]) -> tuple[dict[str, Any], list[OutgoingAttachment]]:
            return _build_request(source, resolved, params or {}, debug or self.debug, handles=handles)

        return self._send_with_handles(build, resolved, timeout, memory, _RunHooks(progress, cancel))

    def submit(
        self,
        source: str,
        inputs: Mapping[str, Sealed] | None = None,
        params: Mapping[str, object] | None = None,
        *,
        timeout: float | None = None,
        memory: int | str | None = None,
        debug: bool = False,
    ) -> BackgroundRun:
        """Start `run` in a background thread and return its `BackgroundRun` at once.

        The arguments are checked here, so a bad one raises before anything
        starts. Submitted runs go on in parallel, one per core; more wait for a
        free core inside the enclave.
        """
        from .background import BackgroundRun

        resolved = inputs or {}

        def build(handles: Mapping[str, str]) -> tuple[dict[str, Any], list[OutgoingAttachment]]:
            return _build_request(source, resolved, params or {}, debug or self.debug, handles=handles)

        # Built once here only to check the arguments; the run builds its request again, with handles.
        request, _ = build({})
        _add_limits(request, timeout, memory)

        # A run still waiting to start when the enclave closes fails, rather than starting the enclave anew.
        with self._lock:
            generation = self._generation

        def start(progress: ProgressCallback, cancel: threading.Event, queued: Callable[[bool], None]) -> RunResult:
            return self._send_with_handles(build, resolved, timeout, memory, _RunHooks(progress, cancel, generation, queued))

        return BackgroundRun(start, label=f"run {request['run_id'][:8]}")

    def invoke(
        self,
        bundle: Bundle,
        data: Sealed | None = None,
        *,
        timeout: float | None = None,
        memory: int | str | None = None,
        debug: bool = False,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> RunResult:
        """Call a Cape function's ``cape_handler(input_bytes)`` in a fresh runner and return what it returns.

        `bundle` is the function's app folder, loaded with
        `confidential_nb.bundles.read_bundle`. The handler gets the plaintext
        of `data` as bytes (a sealed DataFrame as CSV without its index),
        or ``b""`` without `data`. It runs in a private copy of the bundle,
        which is its working directory and is first on ``sys.path``. The
        enclave computes the function checksum from the bundle itself, and
        the receipt names it with ``function_kind`` ``"cape_function"``.
        Timeouts, memory limits, debug runs, progress, cancelling and
        interrupts work as in `run`; an exception's line is its line in app.py.
        """
        inputs = {CAPE_INPUT_NAME: data} if data is not None else {}

        def build(handles: Mapping[str, str]) -> tuple[dict[str, Any], list[OutgoingAttachment]]:
            return _build_invoke_request(bundle, data, debug or self.debug, handles=handles)

        return self._send_with_handles(build, inputs, timeout, memory, _RunHooks(progress, cancel))

    def _send_with_handles(self, build: Callable[[Mapping[str, str]], tuple[dict[str, Any], list[OutgoingAttachment]]],
                           inputs: Mapping[str, Sealed], timeout: float | None, memory: int | str | None,
                           hooks: _RunHooks) -> RunResult:
        """Send a run that names cached inputs by handle; if the monitor lost one, send the inputs themselves, once."""
        handles = self._input_handles.handles_for(inputs)
        try:
            return self._send_recorded(*build(handles), inputs, timeout, memory, hooks)
        except errors.InputHandleError:
            if not handles:
                raise
            log.info("the enclave no longer has %d cached inputs; sending them again", len(handles))
            self._input_handles.forget(inputs.values())
            return self._send_recorded(*build({}), inputs, timeout, memory, hooks)

    def _send_recorded(self, request: dict[str, Any], attachments: list[OutgoingAttachment], inputs: Mapping[str, Sealed],
                       timeout: float | None, memory: int | str | None, hooks: _RunHooks) -> RunResult:
        """Send one run, releasing the handles of collected inputs, and record the handles its reply names."""
        request["release"] = self._input_handles.take_released()
        self._input_handles.expect(request["run_id"], inputs)
        try:
            return self._send_run(request, attachments, timeout, memory, hooks)
        finally:
            self._input_handles.discard(request["run_id"])

    def _send_run(self, request: dict[str, Any], attachments: list[OutgoingAttachment], timeout: float | None,
                  memory: int | str | None, hooks: _RunHooks = _NO_HOOKS) -> RunResult:
        """Add the run's limits to `request`, send it on a run channel and return the checked result."""
        wait = _add_limits(request, timeout, memory)
        self._wait_for_open_run(hooks)
        try:
            channel, generation = self._take_channel(hooks.since)
            exchange = _RunExchange(channel, hooks, wait + _HOST_GRACE_SECONDS)
            try:
                header, replies = exchange.run(request, attachments)
                self._input_handles.record(request["run_id"], header)
            except TimeoutError:
                with self._lock:
                    if generation == self._generation:
                        self._close_locked("timeout")
                raise errors.EnclaveTimeoutError(
                    f"the enclave did not respond within {wait + _HOST_GRACE_SECONDS:g} seconds of the run's start "
                    "and was restarted; try the run again"
                ) from None
            except (ProtocolError, OSError) as exc:
                raise self._monitor_failed(generation, exc) from None
            finally:
                if exchange.reusable:
                    self._return_channel(channel, generation)
                else:
                    channel.close()
        finally:
            self._open_runs.release()
        assert self._key is not None
        return _finish_run(header, replies, request["nonce"], self._key, self.debug, request["op"], exchange.records,
                           self._document)

    def _wait_for_open_run(self, hooks: _RunHooks) -> None:
        """Wait, first come first served, until fewer than `_MAX_OPEN_RUNS` runs of this enclave have a channel.

        Raises RunCancelledError if the run is cancelled first.
        """
        waited = False

        def waiting(place: int) -> None:
            nonlocal waited
            waited = True
            if hooks.queued is not None:
                hooks.queued(True)

        if not self._open_runs.acquire(hooks.cancel or threading.Event(), waiting):
            raise errors.RunCancelledError("the run was cancelled before it started; the enclave stays up for the "
                                           "next run")
        if waited and hooks.queued is not None:
            hooks.queued(False)


def _exits_within(process: subprocess.Popen[bytes], seconds: float) -> bool:
    """Return True when `process` has exited or exits within `seconds`."""
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return False
    return True


# The error message of a run cut short by the end of its monitor, by the reason the monitor ended.
_END_MESSAGES = {
    "closed": "the enclave was closed (Enclave.close, or the end of its with block) while the run was in progress; "
              "run it again, which starts the enclave anew",
    "stopped": "the enclave process stopped unexpectedly while the run was in progress; it restarts on the next run, "
               "see {log}",
    "timeout": "the enclave stopped responding while the run was in progress and was restarted; run it again",
    "interrupted": "an interrupt cut a request to the enclave short, so it was restarted while the run was in "
                   "progress; run it again",
    "start": "the enclave failed to start; run it again, and see {log}",
}


def _add_limits(request: dict[str, Any], timeout: float | None, memory: int | str | None) -> float:
    """Check the run's limits and add them to `request`; return the timeout in seconds."""
    from .limits import DEFAULT_TIMEOUT_SECONDS, MAX_MEMORY_BYTES, MAX_TIMEOUT_SECONDS, format_size, parse_size

    wait = float(timeout) if timeout is not None else DEFAULT_TIMEOUT_SECONDS
    if not 0 < wait <= MAX_TIMEOUT_SECONDS:
        raise ValueError(f"invalid timeout {timeout!r}: expected a number of seconds above 0 and at most {MAX_TIMEOUT_SECONDS:g}")
    request["timeout"] = wait
    request["memory"] = parse_size(memory) if memory is not None else None
    if request["memory"] is not None and request["memory"] > MAX_MEMORY_BYTES:
        raise ValueError(f"invalid memory {memory!r}: the largest limit is {format_size(MAX_MEMORY_BYTES)}")
    return wait


class _RunExchange:
    """One run's messages on its run channel: the request, notices, progress records, the reply, and cancelling.

    The host waits `run_seconds` for the reply from the moment the run
    starts. A run waiting for a core inside the enclave gets ``queued``
    notices every few seconds and ``started`` when it starts, so the wait
    does not count. The channel is `reusable` afterwards only when every
    message of the run, and of a cancel, was read in full.
    """

    def __init__(self, channel: socket.socket, hooks: _RunHooks, run_seconds: float) -> None:
        self.channel = channel
        self.hooks = hooks
        self.run_seconds = run_seconds
        self.deadline = time.monotonic() + run_seconds
        self.records: list[dict[str, Any]] = []
        self.reusable = False

    def run(self, request: dict[str, Any], attachments: list[OutgoingAttachment]) -> tuple[dict[str, Any], list[bytes]]:
        self.deadline = time.monotonic() + self.run_seconds
        self.channel.settimeout(self.run_seconds)
        try:
            send_message(self.channel, request, attachments)
            header, replies = self._await_reply()
        except KeyboardInterrupt:
            self._stop()
            raise KeyboardInterrupt("the run was interrupted and stopped; the enclave stays up for the next run") from None
        except BaseException:
            self._stop()
            raise
        self.reusable = True
        return header, replies

    def _await_reply(self) -> tuple[dict[str, Any], list[bytes]]:
        """Return the run's reply, passing notices and progress records on and watching the cancel event."""
        while True:
            if not self._wait_readable():
                self._stop()
                raise errors.RunCancelledError("the run was cancelled and stopped; the enclave stays up for the next run")
            header, replies = recv_message(self.channel, deadline=self.deadline)
            operation = header.get("op")
            if operation == "progress":
                self._progress(header.get("record"))
            elif operation == "queued":
                self._queued(True, _QUEUED_SILENCE_SECONDS)
            elif operation == "started":
                self._queued(False, self.run_seconds)
            else:
                return header, replies

    def _queued(self, waiting: bool, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        if self.hooks.queued is not None:
            self.hooks.queued(waiting)

    def _wait_readable(self) -> bool:
        """Wait until the channel has data; return False when the cancel event was set first."""
        cancel = self.hooks.cancel
        while True:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the enclave did not reply before the deadline")
            step = min(remaining, _CANCEL_POLL_SECONDS) if cancel is not None else remaining
            readable, _, _ = select.select([self.channel], [], [], step)
            if readable:
                return True
            if cancel is not None and cancel.is_set():
                return False

    def _progress(self, raw: object) -> None:
        from .progress_records import normalize_record

        record = normalize_record(raw)
        if record is None:
            raise ProtocolError("the enclave sent a malformed progress record")
        self.records.append(record)
        if self.hooks.progress is not None:
            self.hooks.progress(record)

    def _stop(self) -> None:
        """Ask the monitor to stop the run; the channel is dropped afterwards, since a reply may be half read."""
        with contextlib.suppress(OSError):
            self.channel.settimeout(_CANCEL_WAIT_SECONDS)
            send_message(self.channel, {"op": "cancel"})
        self.reusable = False


def _build_request(source: str, inputs: Mapping[str, Sealed], params: Mapping[str, object], debug: bool, *,
                   handles: Mapping[str, str] | None = None) -> tuple[dict[str, Any], list[OutgoingAttachment]]:
    """Build a run request; an input named in `handles` is sent as its cache handle instead of its blob."""
    from .result_codec import encode_result

    if not isinstance(source, str):
        raise TypeError(f"source must be a str of Python code, not {type(source).__name__}")
    specs: list[dict[str, str]] = []
    attachments: list[OutgoingAttachment] = []
    for name, sealed in inputs.items():
        _check_name(name, "input")
        _add_input(specs, attachments, name, sealed, (handles or {}).get(name), f"input {name!r}")
    for name in params:
        _check_name(name, "parameter")
        if name in inputs:
            raise ValueError(f"name {name!r} is both an input and a parameter; rename one of them")
    if params:
        for name, value in params.items():
            # Encoding each value alone first gives errors that name the parameter.
            encode_result(value, root=f"parameter {name!r}")
        attachments.append(encode_result(dict(params)))

    request = {"op": "run", "run_id": uuid.uuid4().hex, "nonce": secrets.token_hex(32), "source": source,
               "inputs": specs, "has_params": bool(params), "debug": bool(debug)}
    return request, attachments


def _add_input(specs: list[dict[str, str]], attachments: list[OutgoingAttachment], name: str, sealed: object,
               handle: str | None, role: str) -> None:
    """Append an input's spec and, unless it goes by path or by handle, its blob (a descriptor where it has one)."""
    from .sealing import Sealed

    if not isinstance(sealed, Sealed):
        raise TypeError(f"{role} must be a Sealed (from confidential_nb.seal), not {type(sealed).__name__}")
    if sealed.path is not None:
        # The monitor runs on this machine and streams the file itself, so it never passes through memory here.
        specs.append({"name": name, "path": str(sealed.path.resolve())})
    elif handle is not None:
        specs.append({"name": name, "handle": handle})
    else:
        specs.append({"name": name})
        attachments.append(sealed.wire_attachment())


def _input_cache_bytes(requested: int | None) -> int:
    from .enclave.input_cache import cache_bytes_from_environment

    if requested is None:
        return cache_bytes_from_environment()
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 0:
        raise ValueError(f"invalid input_cache_bytes {requested!r}: expected a number of bytes, 0 or more")
    return requested


def _build_invoke_request(bundle: Bundle, data: Sealed | None, debug: bool, *,
                          handles: Mapping[str, str] | None = None) -> tuple[dict[str, Any], list[OutgoingAttachment]]:
    """Build an invoke request: the input (in memory, by path or by handle) and then the bundle as a deterministic zip."""
    from .bundles import Bundle, bundle_to_zip

    if not isinstance(bundle, Bundle):
        raise TypeError(f"bundle must be a Bundle (from confidential_nb.bundles.read_bundle), not {type(bundle).__name__}")
    specs: list[dict[str, str]] = []
    attachments: list[OutgoingAttachment] = []
    if data is not None:
        _add_input(specs, attachments, CAPE_INPUT_NAME, data, (handles or {}).get(CAPE_INPUT_NAME), "data")
    attachments.append(bundle_to_zip(bundle))

    request = {"op": "invoke", "run_id": uuid.uuid4().hex, "nonce": secrets.token_hex(32), "inputs": specs,
               "debug": bool(debug)}
    return request, attachments


def _check_name(name: object, role: str) -> None:
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"invalid {role} name {name!r}: it must be a Python identifier")
    if name in _RESERVED_NAMES:
        raise ValueError(f"invalid {role} name {name!r}: it is reserved for the run's result; choose another name")


def _finish_run(header: dict[str, Any], attachments: list[bytes], nonce: str, key: PublicKey, debug: bool,
                operation: str = "run", progress: list[dict[str, Any]] | None = None,
                verified_document: AttestationDocument | None = None) -> RunResult:
    """Check the reply to a run (operation ``run``) or an invoke, and return its result or raise its error.

    `verified_document` is the attestation document the host verified when
    the enclave started, which receipts of its runs embed.
    """
    from .attestation import Receipt
    from .result_codec import decode_result
    from .results import RunResult

    texts = [str(text) for text in header.get("warnings", [])]
    for text in texts:
        # Attributed to the enclave run, not to a line of this library.
        warnings.warn_explicit(text, errors.EnclaveWarning, filename="<enclave run>", lineno=1)
    if not header.get("ok"):
        raise _error_from_reply(header, operation)
    if len(attachments) != 1:
        raise errors.ProtocolError("the enclave's reply carries no result")

    blob = attachments[0]
    receipt = Receipt.from_dict(header.get("receipt"), signer=key)
    receipt.verify(allow_debug=debug, verified_document=verified_document)
    if receipt.debug != debug:
        raise errors.AttestationError(f"the receipt's debug flag is {receipt.debug}, but this enclave's is {debug}")
    receipt.check_binding(nonce=nonce, result=blob, progress=progress)
    value = decode_result(blob)
    output = header.get("output")
    return RunResult(value=value, receipt=receipt, withheld_lines=_withheld_lines(header), warnings=texts,
                     output=output if isinstance(output, str) else None, debug=debug)


def _withheld_lines(header: dict[str, Any]) -> int:
    withheld = header.get("withheld_lines", 0)
    return withheld if type(withheld) is int else 0


def _error_from_reply(header: dict[str, Any], operation: str = "run") -> errors.ConfidentialNBError:
    kind = str(header.get("kind"))
    if kind == "exception":
        return _exception_error(header, operation)
    error_class = _ERROR_KINDS.get(kind, errors.EnclaveError)
    message = str(header.get("message") or "the run failed; see enclave.log in the key home")
    return error_class(message)


def _exception_error(header: dict[str, Any], operation: str = "run") -> errors.EnclaveError:
    name = str(header.get("exception_type"))
    line = header.get("line") if type(header.get("line")) is int else None
    subject, code = ("the Cape function", "app.py") if operation == "invoke" else ("the cell", "the cell")
    where = f"at line {line} of {code}" if line else f"outside {code}'s own lines"
    message = header.get("message")
    output = header.get("output")
    if isinstance(output, str):
        # A debug run: the message and printed output came back.
        text = f"{subject} raised {name} {where}: {message}" if message else f"{subject} raised {name} {where}"
        if output:
            text += f"\noutput of the debug run:\n{output.rstrip()}"
    else:
        text = (f"{subject} raised {name} {where}; its message stays inside the enclave because it may contain "
                f"data. {withheld_advice(_withheld_lines(header), 'the message and output')}")
    return errors.EnclaveError(text, exception_type=name, line=line)


def withheld_advice(lines: int, subject: str = "them") -> str:
    """Return the sentence that counts the withheld output lines and names how to see `subject`."""
    rerun = f"with %%cape --debug (or Enclave(debug=True)) on inputs whose policy allows debug to see {subject}"
    if lines == 0:
        return f"Rerun {rerun}"
    noun = "line of output was" if lines == 1 else "lines of output were"
    return f"{lines} {noun} withheld; rerun {rerun}"


def _pin_measurements(home: Path, platform_fingerprint: str, debug: bool, measured: dict[str, str]) -> None:
    """Pin the measurements of the debug or the normal enclave, keeping the other's pin."""
    from .attestation import Pins, load_pins, save_pins

    # The file is read again because the other enclave may have pinned its own measurements since.
    # NOTE: two enclaves that both pin within the same few milliseconds can still lose one pin,
    # which is then pinned again on that enclave's next start.
    current = load_pins(home) or Pins(platform_fingerprint, None)
    save_pins(home, current.with_measurements(debug, measured))
    log.info("pinned the %s measurements in %s", "debug enclave's" if debug else "enclave's", home)


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) in the main thread until the block ends, then raise it.

    Elsewhere, or when the program handles SIGINT itself, the block runs as is.
    """
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    received: list[int] = []
    signal.signal(signal.SIGINT, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if received:
        raise KeyboardInterrupt


def _stop_process(process: subprocess.Popen[bytes] | None, channel: socket.socket | None) -> None:
    """Stop the monitor, which first kills any running runner's process group, then make sure its group is gone."""
    if channel is not None:
        with contextlib.suppress(OSError):
            channel.close()
    if process is None:
        return
    # SIGTERM reaches the monitor even while it waits for a runner; its handler ends the run cleanly.
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        log.warning("enclave monitor %d did not stop within 5 seconds; killing it", process.pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


# The enclaves the magics share, by debug flag. Each starts on first use.
_defaults: dict[bool, Enclave] = {}
_default_lock = threading.Lock()


def default_enclave(debug: bool = False) -> Enclave:
    """Return the enclave the notebook magics share, on the current key home.

    ``debug=True`` returns the shared debug enclave, which ``%%cape --debug``
    uses. When ``CONFIDENTIAL_NB_HOME`` changes, the next call closes both
    shared enclaves and returns one on the new home.
    """
    with _default_lock:
        if any(enclave.home != home_dir() for enclave in _defaults.values()):
            _close_defaults_locked()
        if debug not in _defaults:
            enclave = Enclave(debug=debug)
            atexit.register(enclave.close)
            _defaults[debug] = enclave
        return _defaults[debug]


def close_default_enclaves() -> None:
    """Stop the shared enclaves, normal and debug. The next `default_enclave` call starts a new one."""
    with _default_lock:
        _close_defaults_locked()


def _close_defaults_locked() -> None:
    for enclave in _defaults.values():
        enclave.close()
        atexit.unregister(enclave.close)
    _defaults.clear()


# The Cape-style SDK lives in its own module; it is re-exported here, beside the Enclave it builds on.
from .sdk import Client as Client  # noqa: E402
