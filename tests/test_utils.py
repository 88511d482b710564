"""litefer.utils: atomic writes and the clean-up of what a killed write leaves behind."""
import subprocess
import sys
import textwrap

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
