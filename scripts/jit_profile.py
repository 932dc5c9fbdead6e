#!/usr/bin/env python3
"""Source lines of a loaded BPF program's JIT image, and perf samples over them.

  jit_profile.py lines NAME OUT   every loaded program called NAME: one line per
                                  jited line-info record, "address file:line source"
  jit_profile.py report OUT       reads `perf script -F ip` on stdin, prints samples
                                  per source line (those that fall in OUT's images)
  jit_profile.py image NAME OUT   the JIT image (x86-64 code) of the last loaded
                                  program called NAME, raw, for
                                  `objdump -D -b binary -m i386:x86-64 OUT`

Uses the bpf syscall directly (BPF_OBJ_GET_INFO_BY_FD: jited line info and the
program's BTF strings): bpftool's own jited dump needs a libbfd it is often
built without. See scripts/profile_path.sh.
"""
import bisect
import ctypes
import json
import struct
import subprocess
import sys

SYS_BPF = 321  # x86_64
BPF_PROG_GET_FD_BY_ID, BPF_OBJ_GET_INFO_BY_FD, BPF_BTF_GET_FD_BY_ID = 13, 15, 19
libc = ctypes.CDLL(None, use_errno=True)


def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, 128)
    r = libc.syscall(SYS_BPF, cmd, buf, 128)
    if r < 0:
        raise OSError(ctypes.get_errno(), "bpf(%d)" % cmd)
    return r


def obj_info(fd, size, fill=b""):
    buf = ctypes.create_string_buffer(bytes(fill), size)
    bpf(BPF_OBJ_GET_INFO_BY_FD, struct.pack("<IIQ", fd, size, ctypes.addressof(buf)))
    return buf


def prog_lines(prog_id):
    """(jited address, "file:line", source text) per line-info record."""
    fd = bpf(BPF_PROG_GET_FD_BY_ID, struct.pack("<I", prog_id))
    # struct bpf_prog_info offsets (uapi/linux/bpf.h).
    info = obj_info(fd, 256)
    btf_id, = struct.unpack_from("<I", info, 128)
    n_li, = struct.unpack_from("<I", info, 148)
    n_jli, li_size, jli_size = struct.unpack_from("<III", info, 168)
    li = ctypes.create_string_buffer(n_li * li_size)
    jli = (ctypes.c_uint64 * n_jli)()
    req = bytearray(256)
    struct.pack_into("<I", req, 148, n_li)
    struct.pack_into("<QQ", req, 152, ctypes.addressof(li), ctypes.addressof(jli))
    struct.pack_into("<III", req, 168, n_jli, li_size, jli_size)
    obj_info(fd, 256, req)
    # The program's BTF: its string section holds file names and source lines.
    bfd = bpf(BPF_BTF_GET_FD_BY_ID, struct.pack("<I", btf_id))
    size, = struct.unpack_from("<I", obj_info(bfd, 64), 8)
    raw = ctypes.create_string_buffer(size)
    req = bytearray(64)
    struct.pack_into("<QI", req, 0, ctypes.addressof(raw), size)
    obj_info(bfd, 64, req)
    hdr_len, = struct.unpack_from("<I", raw.raw, 4)
    _, _, str_off, str_len = struct.unpack_from("<IIII", raw.raw, 8)
    strs = raw.raw[hdr_len + str_off:hdr_len + str_off + str_len]

    def string(off):
        return strs[off:strs.index(b"\0", off)].decode(errors="replace")

    out = []
    for k in range(min(n_li, n_jli)):
        _, file_off, line_off, line_col = struct.unpack_from("<IIII", li.raw, k * li_size)
        loc = "%s:%d" % (string(file_off).split("/")[-1], line_col >> 10)
        out.append((jli[k], loc, string(line_off).strip()))
    return out


def cmd_lines(name, out):
    progs = json.loads(subprocess.check_output(["bpftool", "-j", "prog", "show"]))
    ids = [p["id"] for p in progs if p.get("name") == name]
    if not ids:
        sys.exit("jit_profile: no loaded program called %s" % name)
    with open(out, "w") as w:
        for pid in ids:
            for addr, loc, src in prog_lines(pid):
                w.write("%x %d %s %s\n" % (addr, pid, loc, src))
    print("%s: %d program(s)" % (out, len(ids)))


def cmd_image(name, out):
    progs = json.loads(subprocess.check_output(["bpftool", "-j", "prog", "show"]))
    ids = [p["id"] for p in progs if p.get("name") == name]
    if not ids:
        sys.exit("jit_profile: no loaded program called %s" % name)
    fd = bpf(BPF_PROG_GET_FD_BY_ID, struct.pack("<I", ids[-1]))
    # struct bpf_prog_info: jited_prog_len at 16, jited_prog_insns at 24.
    size, = struct.unpack_from("<I", obj_info(fd, 256), 16)
    code = ctypes.create_string_buffer(size)
    req = bytearray(256)
    struct.pack_into("<I", req, 16, size)
    struct.pack_into("<Q", req, 24, ctypes.addressof(code))
    obj_info(fd, 256, req)
    with open(out, "wb") as w:
        w.write(code.raw)
    print("%s: %d bytes of program %d" % (out, size, ids[-1]))


def cmd_report(out):
    recs = sorted(
        (int(a, 16), pid, loc, src)
        for a, pid, loc, src in (
            (l.rstrip("\n").split(" ", 3) + [""])[:4] for l in open(out))
    )
    addrs = [r[0] for r in recs]
    per_line, total, outside = {}, 0, 0
    for l in sys.stdin:
        f = l.split()
        if not f:
            continue
        try:
            ip = int(f[0], 16)
        except ValueError:
            continue
        i = bisect.bisect_right(addrs, ip) - 1
        # Past a program's last record by more than a line's code: not ours.
        if i < 0 or ip - addrs[i] > 512:
            outside += 1
            continue
        key = recs[i][1:]
        per_line[key] = per_line.get(key, 0) + 1
        total += 1
    print("samples in the programs: %d (elsewhere: %d)" % (total, outside))
    for (pid, loc, src), n in sorted(per_line.items(), key=lambda kv: -kv[1])[:60]:
        print("%6d %5.1f%%  prog %-4s %-18s %s" % (n, 100.0 * n / max(total, 1), pid, loc, src[:100]))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "lines":
        cmd_lines(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "report":
        cmd_report(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "image":
        cmd_image(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
