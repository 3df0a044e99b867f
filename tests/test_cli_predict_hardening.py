"""`mnist-classifier predict` against hostile input and interruption: stop signals, SIGKILL, special files,
link loops, output paths, file names, library warnings and --workers. Signals are real and sent to real
processes; workers are found by pid in /proc."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from mnist_classifier.cli import main
from mnist_classifier.errors import ConfigError
from mnist_classifier.predict import Predictor, collect_images, usable_cores

PREDICT = [sys.executable, "-m", "mnist_classifier.cli", "predict"]


@pytest.fixture(scope="module")
def digit_file(tmp_path_factory, mnist) -> Path:
    path = tmp_path_factory.mktemp("digit") / "digit.png"
    Image.fromarray(mnist.test_images[0]).save(path)
    return path


@pytest.fixture(scope="module")
def many_files(tmp_path_factory, digit_file) -> Path:
    """Quick to decode, so the workers mostly wait for work, as on a big folder; long enough to interrupt."""
    folder = tmp_path_factory.mktemp("many")
    for i in range(20000):
        os.link(digit_file, folder / f"copy_{i:05d}.png")
    return folder


# ---------------------------------------------------------------------------------------------- processes

def _in_a_child(function, *args, timeout: float = 60) -> tuple[int, str, str]:
    """Run ``function(*args)`` in a forked copy of this process (quick: nothing to import again), its file
    descriptors 1 and 2 caught: (exit code, stdout, stderr). A run that hangs is killed and fails. Not for
    anything that runs the model: torch's thread pool does not survive a fork."""
    import multiprocessing
    import tempfile

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = multiprocessing.get_context("fork").Process(target=_run_caught, args=(out.fileno(), err.fileno(),
                                                                                      function, args))
        child.start()
        child.join(timeout)
        if child.exitcode is None:
            child.kill()
            child.join()
            raise AssertionError(f"{function.__name__}{args} still ran after {timeout} s")
        out.seek(0)
        err.seek(0)
        return child.exitcode, out.read().decode(errors="surrogateescape"), err.read().decode()


def _run_caught(out_fd: int, err_fd: int, function, args) -> None:
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)
    code = function(*args)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 0)


def _print_collected(pattern: str) -> int:
    print(json.dumps(collect_images([pattern], recursive=True)))
    return 0


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def _workers_of(process: subprocess.Popen, count: int, generation=_children) -> list[int]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pids = generation(process.pid)
        if len(pids) >= count:
            return pids
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.01)
    raise AssertionError("the decoding workers never started")


def _grandchildren(pid: int) -> list[int]:
    return [grandchild for child in _children(pid) for grandchild in _children(child)]


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # a zombie has ended; only its exit status waits to be collected


def _still_running(pids: list[int]) -> list[int]:
    """The pids that are still running after a generous wait (the kernel delivers a parent-death signal
    as the parent exits, but the worker still has to be scheduled to die)."""
    deadline = time.monotonic() + 30
    while any(map(_running, pids)) and time.monotonic() < deadline:
        time.sleep(0.01)
    return [pid for pid in pids if _running(pid)]


def _start_predict(folder: Path, csv: Path):
    assert usable_cores() >= 2, "these tests need a machine with two cores for the decoding pool"
    process = subprocess.Popen([*PREDICT, str(folder), "--csv", str(csv), "--workers", "2"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    workers = _workers_of(process, 2)
    time.sleep(0.3)  # and they are busy
    return process, workers


def _kill(pids: list[int]) -> None:
    for pid in pids:  # orphans of a failed run must not outlive the test
        if _running(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("signum, to_group", [
    (signal.SIGTERM, False),  # docker stop, systemd and timeout signal the command itself
    (signal.SIGHUP, True),    # a closed terminal signals its whole foreground process group
])
def test_stop_signals_end_a_run_like_ctrl_c(many_files, tmp_path, signum, to_group):
    csv = tmp_path / "out.csv"
    process, workers = _start_predict(many_files, csv)
    try:
        (os.killpg if to_group else os.kill)(process.pid, signum)
        assert process.wait(timeout=60) == 128 + signum
        assert process.stderr.read().decode() == f"mnist-classifier predict: stopped by {signal.Signals(signum).name}\n"
        assert _still_running(workers) == []
        assert not csv.exists() and list(tmp_path.iterdir()) == []  # no CSV, and no hidden .out.csv.*.part
    finally:
        _kill(workers)


def test_workers_die_with_a_parent_killed_by_sigkill(many_files, tmp_path):
    process, workers = _start_predict(many_files, tmp_path / "out.csv")
    try:
        process.kill()  # SIGKILL: the parent cleans nothing up
        assert process.wait(timeout=60) == -signal.SIGKILL
        assert _still_running(workers) == []
    finally:
        _kill(workers)


def test_a_worker_killed_under_the_command_is_one_line(many_files, tmp_path):
    """As when the OOM killer picks a worker, or systemd signals every process of the service."""
    process, workers = _start_predict(many_files, tmp_path / "out.csv")
    try:
        os.kill(workers[0], signal.SIGKILL)
        assert process.wait(timeout=60) == 1
        assert process.stderr.read().decode() == ("mnist-classifier predict: error: a decoding worker process ended "
                                                  "unexpectedly (killed by a signal, or out of memory)\n")
        assert _still_running(workers) == [] and list(tmp_path.iterdir()) == []
    finally:
        _kill(workers)


# A worker killed halfway through sending its result leaves a message begun and never ended in the pool's
# result pipe, and its lock on that pipe held: the executor's thread waits for the rest forever, and the
# other workers wait for the lock. Made here on purpose, with the executor's own queue (CPython 3.11).
DIES_WHILE_SENDING = """
import multiprocessing, os, signal, struct
from mnist_classifier.errors import MNISTClassifierError
from mnist_classifier.predict import Predictor

def die_while_sending(chunk):
    results = multiprocessing.current_process()._args[1]
    results._wlock.acquire()
    os.write(results._writer.fileno(), struct.pack("!i", 1 << 20) + bytes(1000))
    os.kill(os.getpid(), signal.SIGKILL)

try:
    list(Predictor(workers=2)._in_pool(die_while_sending, [([k], [str(k)]) for k in range(40)], None))
except MNISTClassifierError as error:
    print(error)
"""


def test_a_worker_killed_while_sending_its_result_is_one_error_and_the_process_ends():
    process = subprocess.Popen([sys.executable, "-c", DIES_WHILE_SENDING], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = process.communicate(timeout=60)
    finally:
        os.killpg(process.pid, signal.SIGKILL) if process.poll() is None else None
    assert (process.returncode, err.decode()) == (0, "")
    assert out.decode() == "a decoding worker process ended unexpectedly (killed by a signal, or out of memory)\n"


# A process with a second thread (a server, a notebook) forks its workers from a fork server instead.
PREDICT_WITH_A_THREAD = """
import sys, threading, time
from mnist_classifier.predict import Predictor, collect_images
threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
for _ in Predictor(workers=2).iter_predictions(collect_images([sys.argv[1]])):
    pass
"""


def test_fork_server_workers_die_with_a_parent_killed_by_sigkill(many_files):
    process = subprocess.Popen([sys.executable, "-c", PREDICT_WITH_A_THREAD, str(many_files)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    workers = _workers_of(process, 2, generation=_grandchildren)  # children of the fork server
    helpers = _children(process.pid)  # the fork server and multiprocessing's resource tracker
    time.sleep(0.3)
    try:
        process.kill()
        assert process.wait(timeout=60) == -signal.SIGKILL
        assert _still_running(workers + helpers) == []
    finally:
        _kill(workers + helpers)


# ---------------------------------------------------------------------------------------------- inputs

def test_fifos_devices_and_sockets_are_reported_never_opened(tmp_path, digit_file):
    folder = tmp_path / "inputs"
    folder.mkdir()
    os.link(digit_file, folder / "a.png")
    os.mkfifo(folder / "fifo.png")  # opening a FIFO blocks until someone writes to it: forever
    (folder / "null.png").symlink_to(os.devnull)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "socket.png"))
    try:
        # The folder, a glob and the FIFO by name: every file still listed once.
        result = subprocess.run([*PREDICT, str(folder), str(folder / "*.png"), str(folder / "fifo.png"), "--json"],
                                capture_output=True, text=True, timeout=120)
    finally:
        server.close()
    rows = {Path(row["path"]).name: row for row in json.loads(result.stdout)}
    assert result.returncode == 1 and sorted(rows) == ["a.png", "fifo.png", "null.png", "socket.png"]
    assert rows["a.png"]["error"] is None and rows["a.png"]["digit"] is not None
    for name, kind in [("fifo.png", "a FIFO"), ("null.png", "a character device"), ("socket.png", "a socket")]:
        assert rows[name]["error"] == f"{folder / name}: not a regular file ({kind})"


@pytest.fixture
def looped_tree(tmp_path, digit_file) -> Path:
    """root/a.png, root/sub/b.png, a link root/alias.png -> a.png and a link loop root/sub/up -> .."""
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    os.link(digit_file, root / "a.png")
    os.link(digit_file, root / "sub" / "b.png")
    (root / "alias.png").symlink_to("a.png")
    (root / "sub" / "up").symlink_to("..")
    return root


def test_link_loops_are_followed_once_and_each_file_listed_once(looped_tree):
    expected = [str(looped_tree / "a.png"), str(looped_tree / "sub" / "b.png")]
    assert collect_images([looped_tree], recursive=True) == expected
    assert collect_images([f"{looped_tree}/**/*.png"], recursive=True) == expected
    assert collect_images([looped_tree / "sub" / "up" / "a.png", looped_tree / "alias.png", looped_tree]) == \
        [str(looped_tree / "sub" / "up" / "a.png")]  # the first path given to a file names it
    assert collect_images([f"{looped_tree}/*/*.png"]) == [str(looped_tree / "sub" / "b.png")]


def test_a_glob_through_two_loops_does_not_explode(looped_tree):
    (looped_tree / "sub" / "up2").symlink_to("../..")
    # Each loop doubles the paths a naive walk follows; run apart, so a regression cannot hang the suite.
    code, out, _ = _in_a_child(_print_collected, f"{looped_tree}/**/*.png")
    assert code == 0 and json.loads(out) == [str(looped_tree / "a.png"), str(looped_tree / "sub" / "b.png")]


# ---------------------------------------------------------------------------------------------- outputs

def test_output_paths_are_checked_before_any_work(capsys, tmp_path, digit_file):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for bad, problem in [(tmp_path, "is a directory"),
                         (blocker / "out.csv", f"{blocker} is not a directory"),
                         (Path("/proc/out.csv"), "cannot write in /proc ("),  # read-only, even for root
                         (Path(os.devnull), "not a regular file")]:
        assert main(["predict", str(digit_file), "--csv", str(bad)]) == 1
        out, err = capsys.readouterr()
        assert out == "" and err.startswith(f"mnist-classifier predict: error: --csv {bad}: {problem}"), err
        assert err.count("\n") == 1
    out = blocker / "m.safetensors"
    assert main(["finetune", str(tmp_path / "missing"), "--out", str(out)]) == 1  # the folder is looked at later
    assert capsys.readouterr().err == f"mnist-classifier finetune: error: {out}: {blocker} is not a directory\n"
    assert main(["combine", "a.safetensors", "b.safetensors", "--out", str(blocker / "m.safetensors")]) == 1
    assert capsys.readouterr().err.startswith(f"mnist-classifier combine: error: --out {blocker / 'm.safetensors'}:")


def test_control_characters_in_names_never_reach_the_terminal(capsys, monkeypatch, tmp_path, digit_file, mnist):
    monkeypatch.chdir(tmp_path)  # short paths: the table shows them whole
    os.mkdir("in")
    os.link(digit_file, "in/evil\x1b[2J\nname.png")  # clears the screen, and breaks the table's line
    os.link(digit_file, os.fsdecode(b"in/bad\xff.png"))  # not UTF-8: cannot even be printed as it is
    assert main(["predict", "in"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and len(out.splitlines()) == 2 + 2
    assert "\nin/bad\\xff.png " in out and "\nin/evil\\x1b[2J\\nname.png " in out
    assert main(["predict", "in", "--json", "--csv", "out.csv"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["path"] for row in rows] == ["in/bad\\xff.png", "in/evil\x1b[2J\nname.png"]  # JSON escapes the rest
    assert all(row["digit"] == mnist.test_labels[0] for row in rows)
    assert "in/bad\\xff.png" in Path("out.csv").read_text(encoding="utf-8")
    os.mkdir("empty\nfolder")
    assert main(["predict", "empty\nfolder"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "empty\\nfolder" in err  # an error stays one line


def test_library_warnings_never_reach_stderr(tmp_path, mnist):
    """A TIFF whose directory is cut short: Pillow warns about it (harmless when the pixels are whole) or
    fails, and libtiff writes its own complaint straight to file descriptor 2."""
    buffer = io.BytesIO()
    Image.fromarray(mnist.test_images[0]).resize((56, 56)).save(buffer, "TIFF", compression="tiff_lzw")
    tiff = buffer.getvalue()
    assert int.from_bytes(tiff[4:8], "little") > len(tiff) - 200  # libtiff writes the directory last
    (tmp_path / "pointer_cut.tif").write_bytes(tiff[:-2])      # only the next-directory pointer is lost
    (tmp_path / "directory_cut.tif").write_bytes(tiff[:-6])    # an entry is lost: cannot be decoded
    result = subprocess.run([*PREDICT, str(tmp_path / "pointer_cut.tif"), str(tmp_path / "directory_cut.tif"),
                             "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stderr == ""
    whole, cut = json.loads(result.stdout)
    assert whole["error"] is None and whole["digit"] == mnist.test_labels[0]
    assert cut["error"].startswith(f"{tmp_path / 'directory_cut.tif'}: truncated or corrupt image data")


# ---------------------------------------------------------------------------------------------- --workers

def test_workers_are_capped_at_the_usable_cores(capsys, pretrained, digit_file):
    cores = len(os.sched_getaffinity(0))
    assert Predictor(pretrained, workers=64).workers == cores
    assert Predictor(pretrained).workers == cores
    with pytest.raises(ConfigError, match="workers must be at least 1, got 0"):
        Predictor(pretrained, workers=0)
    assert main(["predict", str(digit_file), "--workers", "64"]) == 0
    assert capsys.readouterr().err == (f"mnist-classifier predict: warning: --workers 64: this process may use "
                                       f"{cores} cores, so {cores} decoding processes are started\n")
