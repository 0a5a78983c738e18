"""Every process a fedgray command starts is stopped: grandchildren in sessions of their own
and orphans included, on normal exit, on an exception, on SIGINT/SIGTERM, and when the
command itself is killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedgray.launch.processes import Processes, descendants, supervised

# A child that starts a grandchild in a session of its own (as flower-superexec does),
# writes the grandchild's pid and waits.
TREE = (
    "import subprocess, sys, time\n"
    "g = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
    "open(sys.argv[1], 'w').write(str(g.pid))\n"
    "time.sleep(300)\n"
)
# The same, but the grandchild's parent is a middle process that exits at once: the
# grandchild is an orphan (as a Flower process whose parent died), which init would adopt
# but for the reaper.
ORPHANING = (
    "import subprocess, sys, time\n"
    'middle = \'import subprocess, sys; g = subprocess.Popen(["sleep", "300"], '
    'start_new_session=True); open(sys.argv[1], "w").write(str(g.pid))\'\n'
    "subprocess.run([sys.executable, '-c', middle, sys.argv[1]], check=True)\n"
    "time.sleep(300)\n"
)
# The same with a grandchild that exits after 0.3 s.
ORPHAN_EXITS = ORPHANING.replace('"300"], start_new_session=True', '"0.3"]')


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for(path: Path, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text():
            return int(path.read_text())
        time.sleep(0.05)
    raise TimeoutError(path)


def test_stop_ends_a_child_and_its_grandchild_in_another_session(tmp_path: Path) -> None:
    processes = Processes()
    child = processes.start(
        [sys.executable, "-c", TREE, str(tmp_path / "pid")], log_file=tmp_path / "log"
    )
    grandchild = _wait_for(tmp_path / "pid")
    assert grandchild in descendants(child.pid)
    assert os.getpgid(grandchild) != os.getpgid(child.pid)
    processes.stop()
    assert child.poll() is not None
    assert not _alive(grandchild)


def test_supervised_stops_everything_when_the_block_raises(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), supervised() as processes:
        processes.start(
            [sys.executable, "-c", TREE, str(tmp_path / "pid")], log_file=tmp_path / "l"
        )
        grandchild = _wait_for(tmp_path / "pid")
        raise RuntimeError("boom")
    assert not _alive(grandchild)


# A deploy command in miniature: supervised(), one process tree, then wait forever.
COMMAND = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from fedgray.launch.processes import supervised\n"
    "TREE = sys.argv[2]\n"
    "try:\n"
    "    with supervised() as p:\n"
    "        log = Path(sys.argv[1] + '.log')\n"
    "        p.start([sys.executable, '-c', TREE, sys.argv[1]], log_file=log)\n"
    "        time.sleep(300)\n"
    "except KeyboardInterrupt:\n"
    "    sys.exit(130)\n"
)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_command_stops_every_process_it_started(
    tmp_path: Path, sig: signal.Signals
) -> None:
    command = subprocess.Popen(
        [sys.executable, "-c", COMMAND, str(tmp_path / "pid"), TREE], start_new_session=True
    )
    try:
        grandchild = _wait_for(tmp_path / "pid")
        child_pids = descendants(command.pid)
        command.send_signal(sig)
        assert command.wait(timeout=30) == 130
        assert not any(_alive(pid) for pid in child_pids if pid != command.pid)
        assert not _alive(grandchild)
    finally:
        if command.poll() is None:
            os.killpg(command.pid, signal.SIGKILL)


@pytest.mark.parametrize("tree", [TREE, ORPHANING], ids=["tree", "orphan"])
def test_kill_9_of_the_command_still_ends_every_process_it_started(
    tmp_path: Path, tree: str
) -> None:
    command = subprocess.Popen(
        [sys.executable, "-c", COMMAND, str(tmp_path / "pid"), tree], start_new_session=True
    )
    try:
        grandchild = _wait_for(tmp_path / "pid")
        assert grandchild in descendants(command.pid)  # the reaper adopted the orphan
        started = [pid for pid in descendants(command.pid) if pid != command.pid]
        command.kill()
        command.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in started) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in started if _alive(pid)]
    finally:
        if command.poll() is None:
            os.killpg(command.pid, signal.SIGKILL)


def _cpu_ticks(pid: int) -> int:
    """User plus system clock ticks ``pid`` has run for, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_a_reaper_sleeps_while_its_command_runs_and_reaps_orphans_as_they_exit(
    tmp_path: Path,
) -> None:
    """A reaper polling the process table every 0.2 s spends several clock ticks a second;
    one that waits in the kernel spends none. An orphan that exits under it is reaped at
    once (no zombie left while the command runs on)."""
    with supervised() as processes:
        reaper = processes.start(
            [sys.executable, "-c", ORPHAN_EXITS, str(tmp_path / "pid")], log_file=tmp_path / "l"
        )
        orphan = _wait_for(tmp_path / "pid")
        deadline = time.monotonic() + 30
        while Path(f"/proc/{orphan}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not Path(f"/proc/{orphan}").exists(), "the exited orphan was left a zombie"
        before = _cpu_ticks(reaper.pid)
        time.sleep(2.0)
        assert _cpu_ticks(reaper.pid) - before <= 1
        assert reaper.poll() is None
