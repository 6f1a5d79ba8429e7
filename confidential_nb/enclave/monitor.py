"""The monitor: holds the keys, unseals, enforces policy, guards egress, signs receipts.

It never runs user code. Each run, of a notebook cell or of a Cape
function's ``cape_handler``, goes to a fresh runner forked by the zygote.
The monitor sends the runner plaintext over a private socket pair and takes
its encoded result. It then kills the runner's process group, and
only after that checks, signs and releases the result.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..attestation import AttestationDocument, sign_document, sign_receipt
from ..bundles import Bundle, bundle_checksum, read_zip, top_level_names, validate_cape_app
from ..errors import BundleError, ProtocolError
from ..functions import cell_checksum
from ..keys import EnclaveKeys, canonical_json
from ..limits import DEFAULT_FILE_SIZE_BYTES, DEFAULT_OPEN_FILES, DEFAULT_TIMEOUT_SECONDS, format_size, memory_limit_for
from ..protocol import (
    Attachment, DescriptorAttachment, MessageTooLargeError, OutgoingAttachment, PeerClosedError, ReceivedDescriptor,
    recv_fd, recv_message, send_fd, send_message,
)
from ..cgroup import cgroup_name, create_pids_cgroup, kill_members_and_remove
from ..sandbox import Limits, SandboxState, clean_environment, layer_report, measured_layers
from ..shared_buffers import BufferPool, default_retained_bytes
from ..view import view_spec
from .input_cache import InputCache
from .inputs import InputRejected, InputSources, OpenedInput, attachment_count, open_inputs
from .egress import MAX_WARNINGS, fit_text_to_budget, guard_failure, guarded_output, guarded_warnings, text_size
from .service import ServiceAccount
from .run_session import ProgressRelay, RunSession
from .run_slots import RunSlots

log = logging.getLogger("confidential_nb.enclave")

# Host uid of runners when the enclave starts as root: "nobody" on Debian and most distributions.
DEFAULT_RUNNER_UID = 65534
_ZYGOTE_START_SECONDS = 60.0
# How long a runner whose channel closed may take to exit by itself before it is killed.
_CRASH_GRACE_SECONDS = 2.0
# Each monitor's scratch root in the temporary directory is named this prefix, its pid and a random part.
SCRATCH_PREFIX = "confidential_nb-"
# How long closing waits for the runs going on to remove their scratch directories.
_CLOSE_WAIT_SECONDS = 5.0
# How long a timed-out runner gets after SIGINT, and again after SIGTERM, before SIGKILL.
_ESCALATION_STEP_SECONDS = 0.5
# How often the monitor polls the zygote for the exit of a runner it waits for.
_EXIT_POLL_SECONDS = 0.01

# A run without sealed inputs has no policy; its result may still not exceed this size.
NO_INPUT_RESULT_LIMIT_BYTES = 1024**3

# Sources of a run's value: the cell's `result` variable or last expression, or a handler's return value.
RESULT_NAMES = ("result", "last expression", "none", "return value")

NOT_A_DEBUG_ENCLAVE = ("this enclave is not a debug enclave, so it rejects debug runs; use %%cape --debug or "
                       "Enclave(debug=True), which start a separate debug enclave with its own measurements")

# A runner killed by one of these signals hit its CPU-time or file-size limit.
_LIMIT_SIGNALS = {signal.SIGXCPU: "CPU time", signal.SIGXFSZ: "file size"}
_LIMIT_ADVICE = {
    "CPU time": "the CPU-time limit follows --timeout (or timeout=), so raise that",
    "file size": f"files in the run's scratch directory may not exceed {format_size(DEFAULT_FILE_SIZE_BYTES)}",
}


class MalformedProgress(ProtocolError):
    """A runner's progress message failed the checks, so the cell wrote it."""


@dataclass
class Reply:
    """A reply to the host: a JSON header and binary attachments."""

    header: dict[str, Any]
    attachments: list[bytes] = field(default_factory=list)


def failure(kind: str, message: str, **details: Any) -> Reply:
    return Reply({"ok": False, "kind": kind, "message": message, **details})


@dataclass
class Job:
    """The function one run executes, a notebook cell or a Cape function, with what the monitor checks and records.

    ``checksum`` is the function checksum that input policies approve and
    the receipt names. ``guard_source`` is the text whose lines bound an
    exception's reported line: the cell, or the function's app.py.
    ``runner_request`` contains the fields of the runner's request that
    depend on the kind, and ``trailing`` the payloads sent after the inputs'.
    """

    function_kind: str
    checksum: str
    guard_source: str
    syntax_error: Reply | None
    runner_request: dict[str, Any]
    trailing: list[bytes] = field(default_factory=list)
    params: bytes | None = None
    warnings: list[str] = field(default_factory=list)


class Monitor:
    """Serves host requests over one channel until the host closes it."""

    def __init__(self, keys: EnclaveKeys, home: Path, channel: socket.socket, *, debug: bool = False,
                 audit_hook: bool = True, runner_uid: int = DEFAULT_RUNNER_UID, notebook_uid: int | None = None,
                 service_account: ServiceAccount | None = None, input_cache_bytes: int | None = None) -> None:
        self.keys = keys
        self.home = home
        self.channel = channel
        # A debug enclave serves only debug runs, and its attestation documents carry the debug flag.
        self.debug = debug
        # Runs work outside the key home, so a runner's working directory does not point at the keys.
        # The name carries the monitor's pid, so each root's owner is known while several enclaves run on one machine.
        remove_stale_scratch_roots()
        self.scratch_root = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-"))
        self.runner_uid = runner_uid if os.geteuid() == 0 else os.getuid()
        self.runner_gid = runner_uid if os.geteuid() == 0 else os.getgid()
        self.service_account = service_account
        try:
            # The monitor (as itself or as its service account) creates run directories here, the zygote probes here.
            os.chown(self.scratch_root, service_account.uid if service_account else -1, self.runner_gid)
            os.chmod(self.scratch_root, 0o770)
            self.cgroup: Path | None = None
            self.cgroup, cgroup_reason = create_pids_cgroup(cgroup_name())
            self.zygote, self.zygote_channel, hello, view_reason = self._start_zygote()
        except BaseException:
            # A start cut short (the host stopped it, or the zygote failed) leaves no scratch root or cgroup behind.
            shutil.rmtree(self.scratch_root, ignore_errors=True)
            if self.cgroup is not None:
                kill_members_and_remove(self.cgroup)
            raise
        try:
            self._finish_start(hello, view_reason, cgroup_reason, audit_hook, notebook_uid, input_cache_bytes)
        except BaseException:
            self.close()
            raise

    def _finish_start(self, hello: dict[str, Any], view_reason: str | None, cgroup_reason: str | None,
                      audit_hook: bool, notebook_uid: int | None, input_cache_bytes: int | None) -> None:
        """Record the sandbox the zygote reports and set up the run state, once the zygote is up."""
        self.preloaded_modules = frozenset(str(name) for name in hello.get("preloaded_modules", []))
        self.sandbox = SandboxState(
            view=view_reason, runner_uid=int(hello["uid"]),
            notebook_uid=notebook_uid if notebook_uid is not None else os.getuid(),
            run_namespaces=hello.get("run_namespaces"), seccomp=hello.get("seccomp"), audit_hook=audit_hook,
            cgroup=cgroup_reason if view_reason is None else "the sandbox could not be started in its cgroup",
        )
        self.layers = layer_report(self.sandbox)
        for name, layer in self.layers.items():
            if not layer["active"]:
                log.info("sandbox layer %s is unavailable: %s", name, layer["detail"])
        self.runs = 0
        # Plaintext buffers handed to runners, and the cache of opened inputs that keeps some of them.
        # The same bound applies to the cache and to the idle buffers the pool keeps for reuse.
        cache_bytes = input_cache_bytes if input_cache_bytes is not None else default_retained_bytes()
        pool = BufferPool(cache_bytes, sealed=True)
        self.inputs = InputSources(pool, InputCache(cache_bytes, pool))
        self.document: AttestationDocument | None = None
        # Runs on different run channels go on in parallel, one per core; the zygote serves one request at a time.
        self.max_parallel_runs = parallel_run_limit()
        self._slots = RunSlots(self.max_parallel_runs)
        self._zygote_lock = threading.Lock()
        self._counts_lock = threading.Lock()
        self.active_runs = 0
        self.closing = False

    def _start_zygote(self) -> tuple[subprocess.Popen[bytes], socket.socket, dict[str, Any], str | None]:
        """Start the zygote inside the sandbox, or without the sandbox's view if this machine cannot build it."""
        zygote_command = [sys.executable, "-I", "-m", "confidential_nb.enclave.zygote", "--scratch-root", str(self.scratch_root)]
        spec = view_spec(str(self.scratch_root))
        jail_command = [sys.executable, "-I", "-m", "confidential_nb.enclave.jail", "--spec", spec.to_json(),
                        "--uid", str(self.runner_uid), "--gid", str(self.runner_gid)]
        if self.cgroup is not None:
            jail_command += ["--cgroup", str(self.cgroup)]
        started = self._spawn_zygote(jail_command + ["--"], zygote_command)
        if isinstance(started, tuple):
            return (*started, None)

        reason = started
        log.info("starting the zygote without the sandbox's namespaces and view: %s", reason)
        if self.cgroup is not None:
            # Only the sandbox starter joins and later removes the cgroup, so without it the cgroup goes now.
            self.cgroup.rmdir()
            self.cgroup = None
        fallback = self._spawn_zygote([], zygote_command)
        if isinstance(fallback, str):
            raise RuntimeError(f"the zygote failed to start: {fallback}")
        return (*fallback, reason)

    def _spawn_zygote(self, prefix: list[str], zygote_command: list[str]) -> tuple[subprocess.Popen[bytes], socket.socket, dict[str, Any]] | str:
        """Start one zygote and wait for its hello; return the process, channel and hello, or why it failed."""
        ours, theirs = socket.socketpair()
        process = subprocess.Popen(
            prefix + zygote_command + ["--fd", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            env=clean_environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self.scratch_root,
        )
        theirs.close()
        # numpy and pandas load here while the zygote starts on the other core, not before it.
        import_result_guard()
        ours.settimeout(_ZYGOTE_START_SECONDS)
        try:
            hello, _ = recv_message(ours)
            ours.settimeout(None)
        except (OSError, ProtocolError):
            ours.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.kill()
            process.wait()
            assert process.stderr is not None
            detail = process.stderr.read().decode(errors="replace").strip().splitlines()
            return (detail[-1] if detail else f"exit status {process.returncode}")[:500]
        assert process.stderr is not None
        process.stderr.close()
        log.info("zygote started as pid %d (runner uid %s)", process.pid, hello.get("uid"))
        return process, ours, hello

    def serve(self) -> None:
        """Serve the control channel: attestation, status and new run channels, until the host closes it.

        Runs go over run channels, each served by its own thread, so that
        several runs can go on at once and a control request does not wait
        for a run.
        """
        while True:
            try:
                header, descriptor = recv_fd(self.channel)
            except PeerClosedError:
                log.info("host closed the channel; shutting down")
                return
            operation = header.get("op")
            if operation == "shutdown":
                send_message(self.channel, {"ok": True})
                return
            if operation == "channel":
                send_message(self.channel, self._open_run_channel(descriptor).header)
                continue
            if descriptor is not None:
                os.close(descriptor)
            reply = self._handle_safely(header, [], None) if operation in ("attest", "status") else \
                failure("protocol", f"operation {operation!r} is not served on the control channel")
            send_message(self.channel, reply.header, reply.attachments)

    def _open_run_channel(self, descriptor: int | None) -> Reply:
        """Serve a new run channel on its own thread; return the reply to the host's request for it."""
        if descriptor is None:
            # The kernel drops a passed descriptor that this process has no room for.
            log.warning("a run channel arrived without its descriptor")
            return failure("resource", "the enclave could not take a new run channel, most likely because it has too "
                                       "many open files; wait for runs to end, or close the enclave and run again")
        channel = socket.socket(fileno=descriptor)
        thread = threading.Thread(target=self._serve_run_channel, args=(channel,), name="confidential_nb-run-channel",
                                  daemon=True)
        try:
            thread.start()
        except RuntimeError as exc:
            log.warning("could not start a thread for a run channel: %s", exc)
            channel.close()
            return failure("resource", "the enclave could not start a thread for a new run channel; wait for runs "
                                       "to end, or close the enclave and run again")
        return Reply({"ok": True})

    def _serve_run_channel(self, channel: socket.socket) -> None:
        """Serve runs and invokes on one run channel, one at a time, until the host closes it."""
        with contextlib.closing(channel):
            while True:
                try:
                    header, attachments = recv_message(channel, accept_descriptors=True)
                except (ProtocolError, OSError):
                    return
                try:
                    if header.get("op") == "cancel":
                        # The run this cancel meant had already ended; the acknowledgement keeps the channel in step.
                        send_message(channel, {"op": "cancel_ack"})
                        continue
                    if not self._serve_one_run(channel, header, attachments):
                        return
                finally:
                    _close_descriptors(attachments)

    def _serve_one_run(self, channel: socket.socket, header: dict[str, Any], attachments: list[Attachment]) -> bool:
        """Run one request and send its reply; return False when the host has gone."""
        try:
            session = RunSession(channel, self._end_runner)
        except (OSError, RuntimeError) as exc:
            # Without a watcher the run could not be cancelled, so it does not start.
            log.warning("run %s: could not watch its channel: %s", header.get("run_id"), exc)
            send_message(channel, failure("resource", "the enclave could not start the run, most likely because it "
                                                      "has too many open files or threads; wait for runs to end and "
                                                      "run again").header)
            return True
        try:
            reply = self._handle_safely(header, attachments, session)
        finally:
            session.finish()
        del attachments
        if session.cancel_requested or session.host_gone:
            # The host drops the channel after a cancel and never reads the reply, so it could not release these.
            self.inputs.cache.release(list(reply.header.get("cached_inputs", {}).values()))
        try:
            return self._send_reply(channel, header, reply, session)
        finally:
            self._refill_spares()

    def _send_reply(self, channel: socket.socket, header: dict[str, Any], reply: Reply, session: RunSession) -> bool:
        """Send the run's reply to the host; return False when the host has gone."""
        if session.host_gone:
            log.info("run %s: the host closed its channel", header.get("run_id"))
            return False
        try:
            send_message(channel, reply.header, reply.attachments)
            if session.cancel_requested:
                send_message(channel, {"op": "cancel_ack"})
        except OSError:
            return False
        return True

    def _refill_spares(self) -> None:
        """Have the zygote prepare spare runners again, once the run's reply is out and so off the critical path."""
        try:
            self._zygote_request({"op": "refill"})
        except (OSError, ProtocolError) as exc:
            if not self.closing:
                log.warning("failed to request new spare runners from the zygote: %s", exc)

    def _handle_safely(self, header: dict[str, Any], attachments: list[Attachment], session: RunSession | None) -> Reply:
        try:
            return self.handle(header, attachments, session)
        except Exception:  # One bad request must not end the enclave; the host gets an error instead.
            if self.closing:
                log.info("run %s stopped because the enclave is closing", header.get("run_id"))
                return _closed()
            log.exception("request %r failed inside the monitor", header.get("op"))
            return failure("internal", f"the enclave failed to handle the request; see enclave.log in {self.home}")

    def handle(self, header: dict[str, Any], attachments: list[Attachment], session: RunSession | None = None) -> Reply:
        """Handle one request and return its reply; runs and invokes need the `session` of their run channel."""
        operation = header.get("op")
        try:
            if operation == "attest":
                document = sign_document(self.keys, str(header["nonce"]), measured_layers(self.layers), _user_data(header),
                                         debug=self.debug)
                # Receipts embed the document that the host verified when it started this enclave.
                self.document = self.document or document
                return Reply({"ok": True, "document": document.to_dict()})
            if operation == "status":
                account = self.service_account
                return Reply({"ok": True, "zygote_pid": self.zygote.pid, "runs": self.runs, "layers": self.layers,
                              "service_account": f"{account.name} (uid {account.uid})" if account else None,
                              "active_runs": self.active_runs, "waiting_runs": self._slots.waiting,
                              "max_parallel_runs": self.max_parallel_runs, "input_cache": self.inputs.cache.stats()})
            if operation in ("run", "invoke") and session is None:
                return failure("protocol", f"{operation} requests go on a run channel")
            if operation == "run":
                assert session is not None
                return self.run(header, attachments, session)
            if operation == "invoke":
                assert session is not None
                return self.invoke(header, attachments, session)
            return failure("protocol", f"unknown operation {operation!r}")
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("malformed %s request: %s", operation, type(exc).__name__)
            return failure("protocol", f"malformed {operation} request ({type(exc).__name__})")

    def run(self, header: dict[str, Any], attachments: list[Attachment], session: RunSession) -> Reply:
        """Run a notebook cell: the request carries its source, and the parameters after the inputs."""
        specs = list(header["inputs"])
        has_params = bool(header.get("has_params"))
        expected = attachment_count(specs) + (1 if has_params else 0)
        if len(attachments) != expected:
            return failure("protocol", "the number of attachments does not match the inputs")

        source = str(header["source"])
        params = attachments[-1] if has_params else None
        if isinstance(params, ReceivedDescriptor):
            return failure("protocol", "the parameters must come as bytes, not as a file descriptor")
        job = Job(function_kind="cell", checksum=cell_checksum(source), guard_source=source,
                  syntax_error=_check_syntax(source, "<cell>"),
                  runner_request={"op": "run", "source": source, "has_params": params is not None},
                  trailing=[params] if params is not None else [], params=params)
        return self._run_job(header, specs, attachments[:-1] if has_params else attachments, job, session)

    def invoke(self, header: dict[str, Any], attachments: list[Attachment], session: RunSession) -> Reply:
        """Run a Cape function: the request carries its bundle as a zip file after the input, if there is one.

        The checksum that policies approve is computed here from the bundle,
        never taken from the host.
        """
        specs = list(header["inputs"])
        if len(specs) > 1:
            return failure("protocol", "a Cape function takes at most one input")
        if len(attachments) != 1 + attachment_count(specs):
            return failure("protocol", "the number of attachments does not match the input and the bundle")

        bundle_zip = attachments[-1]
        if isinstance(bundle_zip, ReceivedDescriptor):
            return failure("protocol", "the function bundle must come as bytes, not as a file descriptor")
        try:
            bundle = read_zip(bundle_zip)
            validate_cape_app(bundle)
        except BundleError as exc:
            log.info("run %s: invalid function bundle: %s", header.get("run_id"), exc)
            return failure("bundle", f"the function bundle is invalid: {exc}")

        app_source = _app_text(bundle.files["app.py"])
        job = Job(function_kind="cape_function", checksum=bundle_checksum(bundle), guard_source=app_source,
                  syntax_error=_check_syntax(app_source, "app.py"), runner_request={"op": "invoke"},
                  trailing=[bundle_zip], warnings=self._shadowing_warnings(bundle))
        return self._run_job(header, specs, attachments[:-1], job, session)

    def _shadowing_warnings(self, bundle: Bundle) -> list[str]:
        """Warn about the bundle's top-level modules that runners already imported, so the handler cannot use them."""
        shadowed = sorted(top_level_names(bundle) & self.preloaded_modules)
        return [f"the function bundle's {name!r} is not used: the enclave imports its own {name!r} before any "
                "function runs, and Python keeps a module once imported, so the handler gets the enclave's copy; "
                "rename the vendored package or rely on the installed one" for name in shadowed[:MAX_WARNINGS]]

    def _run_job(self, header: dict[str, Any], specs: list[dict[str, Any]], input_attachments: list[Attachment],
                 job: Job, session: RunSession) -> Reply:
        if not self._take_slot(session):
            return _closed() if self.closing else _cancelled()
        try:
            # `close` sets the flag before it waits for the active runs, so a run past this check is waited for.
            if self.closing:
                return _closed()
            scratch = Path(tempfile.mkdtemp(prefix="run-", dir=self.scratch_root))
            try:
                return self._run_in(scratch, header, specs, input_attachments, job, session)
            finally:
                self._clear_scratch(scratch)
                shutil.rmtree(scratch, ignore_errors=True)
        finally:
            with self._counts_lock:
                self.active_runs -= 1
            self._slots.release()

    def _take_slot(self, session: RunSession) -> bool:
        """Wait for one of the cores' run slots; return False when the run was cancelled while it waited.

        A run that waits sends the host ``queued`` notices with its place,
        then ``started`` once it has a slot, so the host's deadline for the
        run does not count the wait.
        """
        queued = False

        def notify(place: int) -> None:
            nonlocal queued
            queued = True
            session.send_notice({"op": "queued", "place": place})

        if not self._slots.acquire(session.cancelled, notify):
            return False
        if session.cancelled.is_set():
            self._slots.release()
            return False
        with self._counts_lock:
            self.active_runs += 1
        if queued:
            session.send_notice({"op": "started"})
        return True

    def _run_in(self, scratch: Path, header: dict[str, Any], specs: list[dict[str, Any]], attachments: list[Attachment],
                job: Job, session: RunSession) -> Reply:
        """Open the run's inputs, cache those that arrived sealed, and run the job on them.

        The reply to a run whose inputs opened names the handles of the
        inputs it cached under ``cached_inputs``, even when the run failed.
        """
        run_id = str(header["run_id"])
        checksum = job.checksum
        log.info("run %s: %s, %d inputs, function %s, debug %s", run_id, job.function_kind, len(specs), checksum[:12],
                 self.debug)
        self.inputs.cache.release(_handles_to_release(header))
        if header.get("debug") and not self.debug:
            return failure("policy", NOT_A_DEBUG_ENCLAVE)
        try:
            # Every run in a debug enclave is a debug run, so each input's policy must allow debug.
            inputs = open_inputs(self.keys, specs, attachments, checksum, self.debug, scratch, self.inputs)
        except InputRejected as exc:
            return failure(exc.kind, str(exc), input=exc.name)

        try:
            cached = self._cache_inputs(inputs)
            reply = self._run_opened(scratch, header, inputs, job, session)
        finally:
            self.inputs.release(inputs)
        if cached:
            reply.header["cached_inputs"] = cached
        return reply

    def _cache_inputs(self, inputs: list[OpenedInput]) -> dict[str, str]:
        """Cache each freshly opened buffer input; return the handles by input name."""
        handles = {}
        for item in inputs:
            entry = item.cache_entry()
            handle = self.inputs.cache.add(entry) if entry is not None else None
            if handle is not None:
                handles[item.name] = handle
        return handles

    def _run_opened(self, scratch: Path, header: dict[str, Any], inputs: list[OpenedInput], job: Job,
                    session: RunSession) -> Reply:
        run_id = str(header["run_id"])
        checksum = job.checksum
        if job.syntax_error is not None:
            return job.syntax_error

        timeout = float(header.get("timeout") or DEFAULT_TIMEOUT_SECONDS)
        requested_memory = header.get("memory")
        memory = memory_limit_for(sum(item.plaintext_length for item in inputs), int(requested_memory) if requested_memory else None)
        limits = Limits(memory_bytes=memory, cpu_seconds=int(timeout) + 5,
                        file_size_bytes=DEFAULT_FILE_SIZE_BYTES, open_files=DEFAULT_OPEN_FILES)

        budget = min((item.policy.max_result_bytes for item in inputs), default=NO_INPUT_RESULT_LIMIT_BYTES)
        request = {**job.runner_request, "debug": self.debug,
                   "inputs": [{"name": item.name, "kind": item.kind, "file": item.file} for item in inputs]}
        started = time.time()
        progress = ProgressRelay(budget, session.send_progress)
        payloads: list[OutgoingAttachment] = []
        try:
            # Each runner gets its own read-only descriptor of the plaintext, closed here once the run ended.
            payloads = [DescriptorAttachment(item.buffer.receiver_descriptor(), item.plaintext_length, owner=item.buffer)
                        for item in inputs if item.buffer is not None]
            reply = self._run_in_runner(scratch, request, payloads + list(job.trailing), limits, timeout, budget,
                                        job.guard_source, session, progress)
        finally:
            for payload in payloads:
                assert isinstance(payload, DescriptorAttachment)
                os.close(payload.fd)
        with self._counts_lock:
            self.runs += 1
        if session.cancelled.is_set():
            log.info("run %s cancelled by the host", run_id)
            return _cancelled()
        if not reply.header.get("ok"):
            log.info("run %s failed: %s", run_id, reply.header.get("kind"))
            explained = _explain_runner_failure(reply, limits)
            if job.warnings:
                # A shadowed package often explains the failure, so its warning comes with it.
                explained.header["warnings"] = job.warnings
            return explained
        result = reply.attachments[0]

        # The runner has ended, so the guard reads the inputs' plaintext while no user code runs.
        rejection = _guard_result_value(result, inputs, scratch)
        if rejection is not None:
            log.info("run %s: result withheld by the egress guard", run_id)
            return rejection

        receipt = sign_receipt(self.keys, {
            "run_id": run_id,
            "nonce": str(header["nonce"]),
            "function_checksum": checksum,
            "function_kind": job.function_kind,
            "inputs": {item.name: item.digest for item in inputs},
            "policies": {item.name: hashlib.sha256(canonical_json(item.policy.to_dict())).hexdigest() for item in inputs},
            "params_digest": hashlib.sha256(job.params).hexdigest() if job.params is not None else None,
            "result_name": reply.header.get("result_name"),
            "result_digest": hashlib.sha256(result).hexdigest(),
            "result_bytes": len(result),
            "started": _utc_seconds(started),
            "finished": _utc_seconds(time.time()),
            **progress.receipt_fields(),
        }, self.document or sign_document(self.keys, "", measured_layers(self.layers), debug=self.debug))
        log.info("run %s finished: %d result bytes", run_id, len(result))
        output: dict[str, Any] = {name: reply.header[name] for name in ("withheld_lines", "output") if name in reply.header}
        # The job's warnings name modules of the bundle, which the host sent, so they do not count against the budget.
        return Reply({"ok": True, "receipt": receipt.to_dict(),
                      "warnings": [*job.warnings, *reply.header.get("warnings", [])],
                      "memory_limit": memory, **output}, [result])

    def _run_in_runner(self, scratch: Path, request: dict[str, Any], payloads: list[OutgoingAttachment], limits: Limits,
                       timeout: float, budget: int, guard_source: str, session: RunSession,
                       progress: ProgressRelay) -> Reply:
        _hand_over(scratch, self.runner_uid, self.runner_gid)
        ours, theirs = socket.socketpair()
        try:
            fork_request = {"op": "fork", "scratch": str(scratch), "scratch_root": str(self.scratch_root),
                            "limits": vars(limits), "namespaces": self.sandbox.run_namespaces is None,
                            "seccomp": self.sandbox.seccomp is None, "audit_hook": self.sandbox.audit_hook}
            with self._zygote_lock:
                send_fd(self.zygote_channel, fork_request, theirs.fileno())
                forked, _ = recv_message(self.zygote_channel)
            theirs.close()
            if "pid" not in forked:
                return self._fork_failure(forked, limits)
            session.attach(int(forked["pid"]))
            return self._exchange(ours, session, request, payloads, limits, timeout, budget, guard_source, progress)
        finally:
            ours.close()
            theirs.close()
            session.end()
            session.detach()

    def _exchange(self, channel: socket.socket, session: RunSession, request: dict[str, Any],
                  payloads: list[OutgoingAttachment],
                  limits: Limits, timeout: float, budget: int, guard_source: str, progress: ProgressRelay) -> Reply:
        """Send the run to the runner, relay its progress and wait for its whole reply until the timeout."""
        deadline = time.monotonic() + timeout
        channel.settimeout(timeout)
        try:
            send_message(channel, request, payloads)
            header, attachments = self._receive_reply(channel, progress, budget, deadline)
        except MessageTooLargeError:
            log.info("a runner sent a reply over the budget of %d bytes", budget)
            return _over_budget(budget)
        except MalformedProgress:
            log.info("a runner sent a malformed progress message")
            session.end()
            return failure("protocol", "the run sent a malformed progress record and was stopped; progress records "
                                       "come only from the library's training loops, so do not send them from the cell")
        except TimeoutError:
            log.info("a runner timed out after %g s", timeout)
            session.end(escalate=True)
            unit = "second" if timeout == 1 else "seconds"
            return failure("timeout", f"the run exceeded its timeout of {timeout:g} {unit} and was stopped; "
                                      "pass a larger --timeout (or timeout=) if it needs more time", timeout=timeout)
        except (ProtocolError, OSError):
            return self._crash_reply(session, limits)

        # Whatever the cell left running (threads, timers, atexit handlers) gets SIGKILL before the reply is trusted.
        # A plaintext file in the scratch directory is read by the guard, so then the run must also be gone.
        session.end(reap=any(spec.get("file") for spec in request.get("inputs", [])))
        return _guard(Reply(header, attachments), guard_source, bool(request["debug"]), budget - progress.bytes)

    def _receive_reply(self, channel: socket.socket, progress: ProgressRelay, budget: int,
                       deadline: float) -> tuple[dict[str, Any], list[bytes]]:
        """Return the runner's reply, passing the progress messages before it to `progress`."""
        while True:
            header, attachments = recv_message(channel, max_total_bytes=budget - progress.bytes, deadline=deadline)
            if header.get("op") != "progress":
                return header, attachments
            if attachments or not progress.offer(header):
                # Library code sends only well-formed records, so the cell has written to the channel.
                raise MalformedProgress("the runner sent a malformed progress message")

    def _fork_failure(self, reply: dict[str, Any], limits: Limits) -> Reply:
        if reply.get("error") == "memory":
            return failure("resource", f"the memory limit of {format_size(limits.memory_bytes)} is below the "
                                       f"{format_size(reply['baseline'])} a runner uses before running any code; "
                                       "raise --memory (or memory=)", resource="memory", limit=limits.memory_bytes)
        log.error("zygote failed to fork a runner: %s", reply)
        return failure("internal", f"the enclave could not start a runner ({reply.get('error')}); restart the enclave")

    def _crash_reply(self, session: RunSession, limits: Limits) -> Reply:
        status = session.end(grace=True)
        if -status in _LIMIT_SIGNALS:
            name = _LIMIT_SIGNALS[signal.Signals(-status)]
            return failure("resource", f"the run exceeded its {name} limit and was stopped; {_LIMIT_ADVICE[name]}", resource=name)
        log.warning("a runner ended without a reply, status %d", status)
        return failure("crash", f"the runner process ended without a result (exit status {status}); "
                                f"if it ran out of memory, raise the limit of {format_size(limits.memory_bytes)} with --memory",
                       status=status)

    def _clear_scratch(self, scratch: Path) -> None:
        """Have the zygote, which owns the runners' files, empty the run's scratch directory.

        Only a service-account monitor needs this: it may not enter
        directories a cell made private. As root the monitor removes them
        itself.
        """
        if self.service_account is None:
            return
        with self._zygote_lock:
            send_fd(self.zygote_channel, {"op": "clear", "path": str(scratch)}, None)
            recv_message(self.zygote_channel)

    def _end_runner(self, pid: int, grace: bool = False, escalate: bool = False, reap: bool = True) -> int:
        """Have the zygote kill the runner's process group (whatever it started goes too) and reap it; return its status.

        The zygote does the killing because `pid` is a process ID in the
        sandbox's PID namespace, which names another process out here. With
        ``reap=False`` the zygote replies once every process of the run has
        been sent SIGKILL, and reaps them afterwards; the status is then 0.
        """
        # Waiting for the runner happens here, between short zygote requests, so other runs' requests go on.
        exited = self._await_exit(pid, _CRASH_GRACE_SECONDS) if grace else None
        for number in (signal.SIGINT, signal.SIGTERM) if escalate else ():
            if exited is not None:
                break
            self._zygote_request({"op": "signal", "pid": pid, "signal": int(number)})
            exited = self._await_exit(pid, _ESCALATION_STEP_SECONDS)
        reply = self._zygote_request({"op": "end", "pid": pid, "reap": reap})
        return int(reply["status"])

    def _await_exit(self, pid: int, seconds: float) -> int | None:
        """Poll the zygote until the runner has exited or `seconds` pass; return its status, or None."""
        deadline = time.monotonic() + seconds
        while True:
            status = self._zygote_request({"op": "poll", "pid": pid}).get("status")
            if status is not None or time.monotonic() >= deadline:
                return None if status is None else int(status)
            time.sleep(_EXIT_POLL_SECONDS)

    def _zygote_request(self, header: dict[str, Any]) -> dict[str, Any]:
        with self._zygote_lock:
            send_fd(self.zygote_channel, header, None)
            reply, _ = recv_message(self.zygote_channel)
        return reply

    def close(self) -> None:
        # Runs still going fail once the zygote's channel closes, and this flag gives them the reason.
        # Waiting runs see it too and start no more, so none decrypts an input into a directory left behind.
        self.closing = True
        self.zygote_channel.close()
        try:
            self.zygote.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.zygote.kill()
            self.zygote.wait()
        self._await_active_runs(_CLOSE_WAIT_SECONDS)
        # The sandbox starter removes the cgroup after the zygote ended.
        shutil.rmtree(self.scratch_root, ignore_errors=True)
        inputs: InputSources | None = getattr(self, "inputs", None)
        if inputs is not None:
            inputs.host_mappings.clear()
            inputs.pool.clear()

    def _await_active_runs(self, seconds: float) -> None:
        """Wait until the runs going on have removed their scratch directories, or `seconds` pass."""
        if not hasattr(self, "_counts_lock"):
            return  # The start was cut short before any run could begin.
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with self._counts_lock:
                if self.active_runs == 0:
                    return
            time.sleep(0.01)
        log.warning("%d runs were still ending when the enclave closed", self.active_runs)


def remove_stale_scratch_roots() -> None:
    """Remove the scratch roots that monitors which no longer run left in the temporary directory.

    A monitor killed with SIGKILL cannot remove its root, and a run's
    file-backed input lies decrypted in it. Only roots this process owns
    are removed.
    """
    for path in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"):
        owner = path.name[len(SCRATCH_PREFIX):].split("-", 1)[0]
        try:
            if not owner.isdigit() or Path(f"/proc/{owner}").exists() or path.lstat().st_uid != os.geteuid():
                continue
        except OSError:
            continue
        log.info("removing the scratch root %s of monitor %s, which no longer runs", path, owner)
        shutil.rmtree(path, ignore_errors=True)


def _hand_over(scratch: Path, uid: int, gid: int) -> None:
    """Give the run's scratch directory and the input files in it to the runner user.

    As root the monitor changes their owner. As a service account it cannot,
    so it gives them the runners' group instead, of which it is a member.
    """
    if (uid, gid) == (os.getuid(), os.getgid()):
        return
    if os.geteuid() == 0:
        os.chown(scratch, uid, gid)
        for entry in scratch.iterdir():
            os.chown(entry, uid, gid, follow_symlinks=False)
        return
    os.chown(scratch, -1, gid)
    os.chmod(scratch, 0o770)
    for entry in scratch.iterdir():
        os.chown(entry, -1, gid, follow_symlinks=False)
        os.chmod(entry, 0o640)


def _explain_runner_failure(reply: Reply, limits: Limits) -> Reply:
    """Name the limit a runner hit in its resource failure, because only the monitor has the value."""
    if reply.header.get("kind") != "resource" or "limit" in reply.header:
        return reply
    if reply.header.get("resource") == "file size":
        return failure("resource", f"the run exceeded its file size limit of {format_size(limits.file_size_bytes)} "
                                   "and was stopped; write smaller files in the scratch directory", resource="file size")
    if reply.header.get("resource") == "memory":
        return failure("resource", f"the run ran out of memory at its limit of {format_size(limits.memory_bytes)} "
                                   "(4 GiB or 4x the sealed inputs by default); raise it with --memory (or memory=), "
                                   "or work on a sample of the data", resource="memory", limit=limits.memory_bytes)
    return reply


def _check_syntax(source: str, filename: str) -> Reply | None:
    """Compile the cell or app.py here, so a syntax error is reported by trusted code with its message."""
    try:
        compile(source, filename, "exec", dont_inherit=True)
    except SyntaxError as exc:
        return Reply({"ok": False, "kind": "exception", "exception_type": type(exc).__name__,
                      "line": exc.lineno, "message": str(exc.msg)[:500]})
    except (ValueError, RecursionError, MemoryError):
        return Reply({"ok": False, "kind": "exception", "exception_type": "SyntaxError", "line": None, "message": None})
    return None


def _app_text(content: bytes) -> str:
    """Return app.py as text with Python's line breaks made ``\n``, so that its lines count as Python counts them.

    Bytes that are not UTF-8 become U+FFFD, which keeps the line count;
    the runner's import of such a file fails with a SyntaxError anyway.
    """
    text = content.decode("utf-8", errors="replace")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def import_result_guard() -> None:
    """Import the result guard, and with it numpy and pandas, which take about a third of a second."""
    from . import result_guard  # noqa: F401


def parallel_run_limit() -> int:
    """Return how many runs may go on at once: one per core this process may use."""
    return max(1, len(os.sched_getaffinity(0)))


def _closed() -> Reply:
    return failure("closed", "the enclave was closed while the run was in progress; run it again, which starts "
                             "the enclave anew")


def _cancelled() -> Reply:
    return failure("cancelled", "the run was interrupted and stopped; the enclave stays up for the next run")


def _over_budget(budget: int) -> Reply:
    return failure("egress", f"the result is larger than the {format_size(budget)} the inputs' policy allows; "
                             "return aggregates, not rows", limit=budget)


def _guard(reply: Reply, source: str, debug: bool, budget: int) -> Reply:
    """Rebuild a runner's reply from what may leave, and hold it to the result budget."""
    header = reply.header
    if header.get("ok") is not True:
        return Reply(fit_text_to_budget(guard_failure(header, source, debug), budget))
    if len(reply.attachments) != 1:
        return failure("internal", "the runner sent a malformed reply and was stopped")

    result_name = header.get("result_name")
    guarded = {"ok": True, "warnings": guarded_warnings(header.get("warnings")), **guarded_output(header, debug),
               "result_name": result_name if result_name in RESULT_NAMES else None}
    # Debug output is shortened first, so that only a result too large on its own fails the run.
    guarded = fit_text_to_budget(guarded, budget - len(reply.attachments[0]))
    if len(reply.attachments[0]) + text_size(guarded) > budget:
        return _over_budget(budget)
    return Reply(guarded, reply.attachments)


def _user_data(header: dict[str, Any]) -> str | None:
    """Return the host's optional user data for the attestation document, bounded like Nitro's 512 bytes."""
    value = header.get("user_data")
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 1024:
        raise ValueError("user_data must be a string of at most 1024 characters")
    return value


def _utc_seconds(moment: float) -> str:
    return dt.datetime.fromtimestamp(round(moment), dt.timezone.utc).isoformat()


def _guard_result_value(result: bytes, inputs: list[OpenedInput], scratch: Path) -> Reply | None:
    """Hold a result to the egress rules of its inputs' policies; return the failure reply when it breaks one."""
    from .result_guard import EgressRejected, SealedSource, guard_result

    sources = [SealedSource(item.name, item.policy, _frame_of(item, scratch)) for item in inputs]
    try:
        guard_result(result, sources)
    except EgressRejected as exc:
        return failure("egress", str(exc))
    return None


def _frame_of(item: OpenedInput, scratch: Path) -> memoryview | Path | None:
    """Return where a DataFrame input's encoded frame is: in its plaintext buffer, or in its file in the scratch directory."""
    if item.kind != "dataframe":
        return None
    if item.file is not None:
        return scratch / item.file
    return item.plaintext()


def _handles_to_release(header: dict[str, Any]) -> list[str]:
    """Return the cache handles the host no longer needs, from the request's optional ``release`` list."""
    handles = header.get("release") or []
    if not isinstance(handles, list) or not all(isinstance(handle, str) for handle in handles):
        raise ValueError("release must be a list of handle strings")
    return handles


def _close_descriptors(attachments: list[Attachment]) -> None:
    for attachment in attachments:
        if isinstance(attachment, ReceivedDescriptor):
            attachment.close()
