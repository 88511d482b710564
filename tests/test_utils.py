"""litefer.utils: atomic writes and the clean-up of what a killed write leaves behind."""
import os
import stat
import subprocess
import sys
import textwrap
import threading

from litefer.utils import atomic_write_bytes, remove_stale_temp_files


def test_stale_temp_files_of_a_killed_atomic_write_are_removed(tmp_path):
    """A process killed inside atomic_open leaves its temporary file; only such files are removed."""
    atomic_write_bytes(tmp_path / "last.pt", b"complete")
    killed = textwrap.dedent(f"""
        import os
        from litefer.utils import atomic_open
        with atomic_open({str(tmp_path / 'last.pt')!r}) as f:
            f.write(b"half")
            f.flush()
            os._exit(9)                      # like SIGKILL: no clean-up runs
    """)
    assert subprocess.run([sys.executable, "-c", killed]).returncode == 9
    stale = [p for p in tmp_path.iterdir() if p.name.startswith(".last.pt.")]
    assert len(stale) == 1 and stale[0].read_bytes() == b"half"
    keep = [".hidden", "notes.tmp", ".last.pt.short.tmp", ".last.pt.k3j_x9ab.tmp.bak", "last.pt"]
    for name in keep[:-1]:
        (tmp_path / name).write_text("keep")
    (tmp_path / ".best.pt.ab_cd123.tmp").mkdir()            # a folder with the pattern's name: not ours
    assert remove_stale_temp_files(tmp_path) == stale
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep + [".best.pt.ab_cd123.tmp"])
    assert (tmp_path / "last.pt").read_bytes() == b"complete"
    assert remove_stale_temp_files(tmp_path) == []
    assert remove_stale_temp_files(tmp_path / "missing") == []


def test_a_symbolic_link_stays_a_link_and_its_target_gets_the_content(tmp_path):
    """Atomic replacement follows the link instead of renaming a plain file over it."""
    target = tmp_path / "real" / "results.json"
    target.parent.mkdir()
    target.write_bytes(b"old")
    link = tmp_path / "results.json"
    link.symlink_to(target)
    atomic_write_bytes(link, b"new")
    assert link.is_symlink() and target.read_bytes() == b"new"
    assert not [p for p in target.parent.iterdir() if p.name != "results.json"]


def test_a_device_node_stays_a_device(tmp_path):
    """A null device is written into, not replaced by a plain file. As root (where a rename over
    /dev/null would succeed) the test makes its own node, so a regression cannot break /dev/null."""
    device = "/dev/null"
    if os.geteuid() == 0:
        device = tmp_path / "null"
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    atomic_write_bytes(device, b"discarded")
    assert stat.S_ISCHR(os.stat(device).st_mode)


def test_a_fifo_is_written_into(tmp_path):
    """A reader on a FIFO gets the content, and the FIFO stays a FIFO."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    atomic_write_bytes(fifo, b"streamed")
    reader.join(timeout=10)
    assert got == [b"streamed"] and stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_stdout_redirected_into_a_file_is_appended_to_not_replaced(tmp_path):
    """``--json /dev/stdout`` with stdout redirected into a file: the path leads through
    /proc/self/fd/1 to that file, which must be written through the open descriptor (what was
    printed before stays), not replaced by rename. Our own link to /proc/self/fd/1 stands in for
    /dev/stdout, so that nothing outside tmp_path is touched."""
    link = tmp_path / "stdout"
    link.symlink_to("/proc/self/fd/1")
    out = tmp_path / "out.txt"
    code = ("import sys; from litefer.utils import atomic_write_bytes; print('table', flush=True); "
            f"atomic_write_bytes({str(link)!r}, b'json')")
    with open(out, "wb") as f:
        subprocess.run([sys.executable, "-c", code], stdout=f, check=True, timeout=60)
    assert out.read_bytes() == b"table\njson"
    assert link.is_symlink()
