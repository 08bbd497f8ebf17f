"""A 200-byte static x86_64 program that sets a file capability, for images without setcap.

``setcap_program()`` is an ELF executable: ``prog PATH`` calls
``setxattr(PATH, "security.capability", <v2: cap_dac_read_search, effective>, 20, 0)``
and exits with the errno it got (0 on success), so a test in a busybox container can ask
for a file capability and read the answer from the exit code. Hand-assembled: no
compiler or libc needed on the host or in the image.
"""

from __future__ import annotations

import struct

BASE = 0x400000
HEADERS = 64 + 56  # ELF header + one program header
CAP_DAC_READ_SEARCH = 2
# struct vfs_cap_data, revision 2 with the effective flag: permitted and inheritable words.
VFS_CAP = struct.pack("<5I", 0x02000001, 1 << CAP_DAC_READ_SEARCH, 0, 0, 0)
NAME = b"security.capability\0"


def _code(name_at: int, value_at: int) -> bytes:
    """The program text at ``BASE + HEADERS``; the data follows it (RIP-relative leas)."""
    code = bytearray()
    code += bytes.fromhex("488b7c2410")  # mov rdi, [rsp+16]   (argv[1])
    code += bytes.fromhex("b8bc000000")  # mov eax, 188        (setxattr)
    for reg in ("35", "15"):  # lea rsi, [rip+name]; lea rdx, [rip+value]
        target = name_at if reg == "35" else value_at
        end = HEADERS + len(code) + 7
        code += bytes.fromhex("488d" + reg) + struct.pack("<i", target - end)
    code += bytes.fromhex("41ba") + struct.pack("<I", len(VFS_CAP))  # mov r10d, 20
    code += bytes.fromhex("4531c0")  # xor r8d, r8d
    code += bytes.fromhex("0f05")  # syscall
    code += bytes.fromhex("f7d8")  # neg eax
    code += bytes.fromhex("89c7")  # mov edi, eax
    code += bytes.fromhex("b83c000000")  # mov eax, 60 (exit)
    code += bytes.fromhex("0f05")  # syscall
    return bytes(code)


def setcap_program() -> bytes:
    size = len(_code(0, 0))
    name_at = HEADERS + size
    value_at = name_at + len(NAME)
    body = _code(name_at, value_at) + NAME + VFS_CAP
    total = HEADERS + len(body)
    elf = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # 64-bit, little endian, SysV
    elf += struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, BASE + HEADERS, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    elf += struct.pack("<IIQQQQQQ", 1, 5, 0, BASE, BASE, total, total, 0x1000)  # PT_LOAD r-x
    return elf + body
