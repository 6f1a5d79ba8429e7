"""A seccomp-BPF filter for runner processes, assembled by hand and installed with ctypes.

The filter kills the process when a system call arrives through a foreign
ABI (another architecture, or x32 on x86_64). Calls that start processes,
create or join namespaces, reach another process's memory or signals, set
resource limits or administer the whole host fail with ``EPERM``.
``clone3`` fails with ``ENOSYS`` because its flags sit in a struct that
seccomp cannot read, so glibc 2.34 and later retry ``pthread_create`` and
``posix_spawn`` with ``clone``, whose flags the filter checks. Every other
call is allowed.

Only x86_64 and aarch64 are supported. System call numbers come from the
Linux 6.1 UAPI headers: ``arch/x86/entry/syscalls/syscall_64.tbl`` (installed
as ``asm/unistd_64.h``) and ``include/uapi/asm-generic/unistd.h``, the table
arm64 uses. Calls added after 6.1 (``statmount``, ``listmount``,
``open_tree_attr``) have the same number on both, from the kernel's unified
numbering of calls 424 and up.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("confidential_nb.seccomp")

_PR_SET_NO_NEW_PRIVS = 38
_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_FILTER_FLAG_TSYNC = 1

_SECCOMP_RET_KILL_PROCESS = 0x80000000
_SECCOMP_RET_ERRNO = 0x00050000
_SECCOMP_RET_ALLOW = 0x7FFF0000

# Offsets into struct seccomp_data (include/uapi/linux/seccomp.h).
_DATA_NR = 0
_DATA_ARCH = 4
_DATA_ARGS = 16

# Classic BPF opcodes (include/uapi/linux/filter.h and bpf_common.h).
_BPF_LD_W_ABS = 0x20
_BPF_ALU_AND_K = 0x54
_BPF_JEQ_K = 0x15
_BPF_JGE_K = 0x35
_BPF_JSET_K = 0x45
_BPF_RET_K = 0x06
_MAX_JUMP = 255

_X32_SYSCALL_BIT = 0x40000000
_CLONE_THREAD = 0x00010000
# CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET.
# CLONE_NEWTIME (0x80) overlaps the exit-signal byte of clone's flags and works only through clone3 and unshare.
_CLONE_NAMESPACE_FLAGS = 0x7E020000
_PERSONALITY_QUERY = 0xFFFFFFFF
_S_IFMT = 0o170000
_DEVICE_NODE_TYPES = (0o020000, 0o060000)  # S_IFCHR, S_IFBLK

# Calls that fail with EPERM whatever their arguments, by name, for both tables.
_DENIED_CALLS = (
    # Starting programs and processes (clone is checked by its flags instead).
    "execve", "execveat", "fork", "vfork",
    # Namespaces, mounts and the filesystem root.
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "mount_setattr", "open_tree",
    "open_tree_attr", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "statmount", "listmount",
    # Reaching other processes: memory, descriptors, tracing, signals by pidfd.
    "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "process_mrelease", "kcmp",
    "pidfd_open", "pidfd_getfd", "pidfd_send_signal", "move_pages", "migrate_pages", "tkill",
    # Kernel interfaces that runners never need and that widen the kernel's attack surface.
    "bpf", "keyctl", "add_key", "request_key", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "open_by_handle_at", "name_to_handle_at",
    # Host administration, which a runner running as root could otherwise do to the whole machine.
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot",
    "swapon", "swapoff", "syslog", "acct", "quotactl", "quotactl_fd", "settimeofday", "clock_settime",
    "clock_adjtime", "adjtimex", "sethostname", "setdomainname", "vhangup", "iopl", "ioperm",
    "uselib", "lookup_dcookie", "nfsservctl",
    # Setting resource limits, which root may raise past the runner's hard limits (prlimit64 is checked).
    "setrlimit",
)


@dataclass(frozen=True)
class _Architecture:
    """One supported ABI: its audit architecture value and its system call table."""

    name: str
    audit_arch: int
    rejects_x32: bool
    numbers: dict[str, int]


_X86_64_NUMBERS = {
    "execve": 59, "execveat": 322, "fork": 57, "vfork": 58, "clone": 56, "clone3": 435,
    "unshare": 272, "setns": 308, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
    "mount_setattr": 442, "open_tree": 428, "open_tree_attr": 467, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "statmount": 457, "listmount": 458,
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "process_madvise": 440,
    "process_mrelease": 448, "kcmp": 312, "pidfd_open": 434, "pidfd_getfd": 438, "pidfd_send_signal": 424,
    "move_pages": 279, "migrate_pages": 256, "tkill": 200,
    "bpf": 321, "keyctl": 250, "add_key": 248, "request_key": 249, "perf_event_open": 298, "userfaultfd": 323,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "open_by_handle_at": 304, "name_to_handle_at": 303,
    "kexec_load": 246, "kexec_file_load": 320, "init_module": 175, "finit_module": 313, "delete_module": 176,
    "reboot": 169, "swapon": 167, "swapoff": 168, "syslog": 103, "acct": 163, "quotactl": 179,
    "quotactl_fd": 443, "settimeofday": 164, "clock_settime": 227, "clock_adjtime": 305, "adjtimex": 159,
    "sethostname": 170, "setdomainname": 171, "vhangup": 153, "iopl": 172, "ioperm": 173, "uselib": 134,
    "lookup_dcookie": 212, "nfsservctl": 180, "setrlimit": 160, "prlimit64": 302,
    "personality": 135, "mknod": 133, "mknodat": 259,
    "kill": 62, "tgkill": 234, "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297,
    "seccomp": 317,
}

# The generic table has no fork, vfork, mknod, iopl, ioperm or uselib.
_AARCH64_NUMBERS = {
    "execve": 221, "execveat": 281, "clone": 220, "clone3": 435,
    "unshare": 97, "setns": 268, "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51,
    "mount_setattr": 442, "open_tree": 428, "open_tree_attr": 467, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "statmount": 457, "listmount": 458,
    "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "process_madvise": 440,
    "process_mrelease": 448, "kcmp": 272, "pidfd_open": 434, "pidfd_getfd": 438, "pidfd_send_signal": 424,
    "move_pages": 239, "migrate_pages": 238, "tkill": 130,
    "bpf": 280, "keyctl": 219, "add_key": 217, "request_key": 218, "perf_event_open": 241, "userfaultfd": 282,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "open_by_handle_at": 265, "name_to_handle_at": 264,
    "kexec_load": 104, "kexec_file_load": 294, "init_module": 105, "finit_module": 273, "delete_module": 106,
    "reboot": 142, "swapon": 224, "swapoff": 225, "syslog": 116, "acct": 89, "quotactl": 60,
    "quotactl_fd": 443, "settimeofday": 170, "clock_settime": 112, "clock_adjtime": 266, "adjtimex": 171,
    "sethostname": 161, "setdomainname": 162, "vhangup": 58, "lookup_dcookie": 18, "nfsservctl": 42,
    "setrlimit": 164, "prlimit64": 261,
    "personality": 92, "mknodat": 33,
    "kill": 129, "tgkill": 131, "rt_sigqueueinfo": 138, "rt_tgsigqueueinfo": 240,
    "seccomp": 277,
}

_ARCHITECTURES = {
    "x86_64": _Architecture("x86_64", 0xC000003E, True, _X86_64_NUMBERS),
    "aarch64": _Architecture("aarch64", 0xC00000B7, False, _AARCH64_NUMBERS),
}

# Set once this module has installed its filter in this process.
_installed = False


class _Assembler:
    """Classic BPF with named forward-jump targets, resolved when the program is finished."""

    def __init__(self) -> None:
        self._code: list[tuple[int, str | int, str | int, int]] = []
        self._labels: dict[str, int] = {}

    def load(self, offset: int) -> None:
        """Load the 32-bit word of struct seccomp_data at `offset` into the accumulator."""
        self._code.append((_BPF_LD_W_ABS, 0, 0, offset))

    def and_(self, mask: int) -> None:
        self._code.append((_BPF_ALU_AND_K, 0, 0, mask))

    def jump(self, opcode: int, value: int, if_true: str | int = 0, if_false: str | int = 0) -> None:
        """Compare the accumulator with `value` and jump to a label, or to the next instruction when 0."""
        self._code.append((opcode, if_true, if_false, value))

    def ret(self, action: int) -> None:
        self._code.append((_BPF_RET_K, 0, 0, action))

    def label(self, name: str) -> None:
        if name in self._labels:
            raise ValueError(f"BPF label {name!r} defined twice")
        self._labels[name] = len(self._code)

    def assemble(self) -> list[tuple[int, int, int, int]]:
        """Return the instructions with every label replaced by its relative jump offset."""
        program = []
        for index, (opcode, if_true, if_false, value) in enumerate(self._code):
            program.append((opcode, self._offset(index, if_true), self._offset(index, if_false), value))
        return program

    def _offset(self, index: int, target: str | int) -> int:
        if isinstance(target, int):
            return target
        if target not in self._labels:
            raise ValueError(f"BPF label {target!r} is not defined")

        # Classic BPF jumps only forward, by at most 255 instructions past the next one.
        offset = self._labels[target] - index - 1
        if not 0 <= offset <= _MAX_JUMP:
            raise ValueError(f"BPF jump to {target!r} spans {offset} instructions, outside 0..{_MAX_JUMP}")
        return offset


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _argument_low_word(index: int) -> int:
    """Return the offset of the low 32 bits of argument `index`, which comes first on little-endian ABIs."""
    return _DATA_ARGS + 8 * index


def build_program(arch: _Architecture, pid: int) -> list[tuple[int, int, int, int]]:
    """Assemble the filter for `arch`, which lets signals reach only process `pid`."""
    asm = _Assembler()
    numbers = arch.numbers

    asm.load(_DATA_ARCH)
    asm.jump(_BPF_JEQ_K, arch.audit_arch, if_false="kill")
    asm.load(_DATA_NR)
    if arch.rejects_x32:
        # Numbers from 0x40000000 up are x32 calls. The check also kills number -1, which only tracers use.
        asm.jump(_BPF_JGE_K, _X32_SYSCALL_BIT, if_true="kill")

    asm.jump(_BPF_JEQ_K, numbers["clone"], if_true="clone")
    asm.jump(_BPF_JEQ_K, numbers["clone3"], if_true="enosys")
    asm.jump(_BPF_JEQ_K, numbers["personality"], if_true="personality")
    asm.jump(_BPF_JEQ_K, numbers["prlimit64"], if_true="prlimit64")
    for name in ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"):
        asm.jump(_BPF_JEQ_K, numbers[name], if_true="signal")
    if "mknod" in numbers:
        asm.jump(_BPF_JEQ_K, numbers["mknod"], if_true="mknod")
    asm.jump(_BPF_JEQ_K, numbers["mknodat"], if_true="mknodat")
    for name in _DENIED_CALLS:
        if name in numbers:
            asm.jump(_BPF_JEQ_K, numbers[name], if_true="eperm")
    asm.ret(_SECCOMP_RET_ALLOW)

    _emit_argument_checks(asm, pid, has_mknod="mknod" in numbers)

    asm.label("eperm")
    asm.ret(_SECCOMP_RET_ERRNO | errno.EPERM)
    asm.label("enosys")
    asm.ret(_SECCOMP_RET_ERRNO | errno.ENOSYS)
    asm.label("kill")
    asm.ret(_SECCOMP_RET_KILL_PROCESS)
    return asm.assemble()


def _emit_argument_checks(asm: _Assembler, pid: int, *, has_mknod: bool) -> None:
    """Emit the blocks for calls whose verdict depends on their arguments, each ending in a return."""
    # clone: only threads, and no thread in a new namespace (the kernel accepts CLONE_THREAD | CLONE_NEWNET).
    asm.label("clone")
    asm.load(_argument_low_word(0))
    asm.jump(_BPF_JSET_K, _CLONE_NAMESPACE_FLAGS, if_true="eperm")
    asm.jump(_BPF_JSET_K, _CLONE_THREAD, if_false="eperm")
    asm.ret(_SECCOMP_RET_ALLOW)

    # personality(0xffffffff) only reads the current persona. Setting one has no use in a runner.
    asm.label("personality")
    asm.load(_argument_low_word(0))
    asm.jump(_BPF_JEQ_K, _PERSONALITY_QUERY, if_false="eperm")
    asm.ret(_SECCOMP_RET_ALLOW)

    # kill, tgkill, rt_sigqueueinfo and rt_tgsigqueueinfo take the target process first, as a 32-bit pid_t.
    asm.label("signal")
    asm.load(_argument_low_word(0))
    asm.jump(_BPF_JEQ_K, pid, if_false="eperm")
    asm.ret(_SECCOMP_RET_ALLOW)

    # prlimit64(pid, resource, new_limit, old_limit) may only read, and only this process's limits
    # (pid 0 or its own id). glibc's getrlimit uses it with new_limit NULL.
    asm.label("prlimit64")
    asm.load(_argument_low_word(0))
    asm.jump(_BPF_JEQ_K, 0, if_true="prlimit64_read")
    asm.jump(_BPF_JEQ_K, pid, if_false="eperm")
    asm.label("prlimit64_read")
    asm.load(_argument_low_word(2))
    asm.jump(_BPF_JEQ_K, 0, if_false="eperm")
    asm.load(_argument_low_word(2) + 4)
    asm.jump(_BPF_JEQ_K, 0, if_false="eperm")
    asm.ret(_SECCOMP_RET_ALLOW)

    # mknod and mknodat may still create FIFOs, sockets and regular files, but not device nodes.
    if has_mknod:
        _emit_device_node_check(asm, "mknod", mode_argument=1)
    _emit_device_node_check(asm, "mknodat", mode_argument=2)


def _emit_device_node_check(asm: _Assembler, label: str, mode_argument: int) -> None:
    asm.label(label)
    asm.load(_argument_low_word(mode_argument))
    asm.and_(_S_IFMT)
    for node_type in _DEVICE_NODE_TYPES:
        asm.jump(_BPF_JEQ_K, node_type, if_true="eperm")
    asm.ret(_SECCOMP_RET_ALLOW)


def current_architecture() -> _Architecture | None:
    """Return the ABI this interpreter runs under, or None when the filter does not support it."""
    arch = _ARCHITECTURES.get(platform.machine())
    # A 32-bit interpreter on a 64-bit kernel reports the kernel's machine but makes 32-bit calls.
    if arch is None or ctypes.sizeof(ctypes.c_void_p) != 8 or sys.byteorder != "little":
        return None
    return arch


def supported() -> tuple[bool, str]:
    """Return whether install_filter can work here, and the reason when it cannot."""
    if not sys.platform.startswith("linux"):
        return False, f"seccomp needs Linux, not {sys.platform}"
    if current_architecture() is None:
        return False, (f"no system call table for machine {platform.machine()!r} with "
                       f"{8 * ctypes.sizeof(ctypes.c_void_p)}-bit {sys.byteorder}-endian pointers")

    try:
        actions = Path("/proc/sys/kernel/seccomp/actions_avail").read_text().split()
    except OSError as exc:
        return False, f"cannot read /proc/sys/kernel/seccomp/actions_avail ({exc.strerror}); seccomp filters may be missing"
    missing = [action for action in ("kill_process", "errno", "allow") if action not in actions]
    if missing:
        return False, f"the kernel lacks the seccomp actions {', '.join(missing)}"
    return True, "seccomp filters are available"


def filter_active() -> bool:
    """Return True when this thread runs under a seccomp filter (``Seccomp: 2`` in /proc/self/status)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Seccomp:"):
                return line.split()[1] == "2"
    return False


@dataclass(frozen=True)
class PreparedFilter:
    """A filter program built for one process, ready for `install_filter` in that process."""

    pid: int
    arch: _Architecture
    program: ctypes.Array[_SockFilter]


# Filters built by `prepare_filter`, by the process id that their signal rule allows.
_prepared_filters: dict[int, PreparedFilter] = {}


def prepare_filter(pid: int | None = None) -> PreparedFilter:
    """Build the runner filter for process `pid` (by default this one) without installing it.

    A spare runner prepares its filter before its run arrives, so only the
    system calls of `install_filter` remain on the run's critical path.
    Filters are kept by pid, so the zygote builds the one for its runners'
    pid once and every spare forked afterwards inherits it. Raises
    RuntimeError when the platform is not supported.
    """
    pid = os.getpid() if pid is None else pid
    if pid in _prepared_filters:
        return _prepared_filters[pid]

    ok, reason = supported()
    arch = current_architecture()
    if not ok or arch is None:
        raise RuntimeError(f"cannot install the seccomp filter: {reason}")
    program = build_program(arch, pid)
    instructions = (_SockFilter * len(program))(*(_SockFilter(*instruction) for instruction in program))
    _prepared_filters[pid] = PreparedFilter(pid, arch, instructions)
    return _prepared_filters[pid]


def install_filter(prepared: PreparedFilter | None = None) -> None:
    """Set no_new_privs and install the runner filter on every thread of this process.

    Call it in the runner after its last fork, after the isolation steps
    that need denied calls (unshare, mount, setrlimit), and before any user
    code runs. The filter embeds this process's id, because it lets signals
    reach only this process, so a `prepared` filter must come from
    `prepare_filter` in this same process (ValueError otherwise). A second
    call in the same process does nothing. Raises OSError when the kernel
    rejects a step, and RuntimeError when the platform is not supported or
    a thread could not be synchronised.
    """
    global _installed
    if _installed:
        logger.debug("seccomp filter already installed in this process")
        return

    if prepared is None:
        prepared = prepare_filter()
    elif prepared.pid != os.getpid():
        raise ValueError(f"the seccomp filter was prepared for process {prepared.pid}, not for this process "
                         f"{os.getpid()}; call prepare_filter in the process that installs it")

    libc = ctypes.CDLL(None, use_errno=True)
    _set_no_new_privs(libc)
    _load_filter(libc, prepared.arch, prepared.program)

    _installed = True
    logger.debug("seccomp filter installed for %s", prepared.arch.name)


def _set_no_new_privs(libc: ctypes.CDLL) -> None:
    # The kernel accepts a filter from a process without CAP_SYS_ADMIN only once no_new_privs is set.
    zero = ctypes.c_ulong(0)
    if libc.prctl(ctypes.c_int(_PR_SET_NO_NEW_PRIVS), ctypes.c_ulong(1), zero, zero, zero) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"prctl(PR_SET_NO_NEW_PRIVS) failed: {os.strerror(code)}")


def _load_filter(libc: ctypes.CDLL, arch: _Architecture, instructions: ctypes.Array[_SockFilter]) -> None:
    fprog = _SockFprog(len(instructions), instructions)

    # TSYNC applies the filter to every thread at once, where prctl(PR_SET_SECCOMP) confines only the caller.
    libc.syscall.restype = ctypes.c_long
    result = libc.syscall(ctypes.c_long(arch.numbers["seccomp"]), ctypes.c_long(_SECCOMP_SET_MODE_FILTER),
                          ctypes.c_long(_SECCOMP_FILTER_FLAG_TSYNC), ctypes.byref(fprog))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"seccomp(SECCOMP_SET_MODE_FILTER) failed: {os.strerror(code)}")
    if result > 0:
        raise RuntimeError(f"seccomp filter not installed: thread {result} could not be synchronised")
