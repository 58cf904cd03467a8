"""What every command shares (cli.py): user errors in one line, bugs with their traceback,
TensorFlow kept off the GPUs."""

import subprocess
import sys
import textwrap

import pytest

from inception_jax import cli
from inception_jax.errors import UserError
from tests.helpers import ROOT, run_env


def python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env or run_env(),
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_a_user_error_is_one_line_and_status_2(capsys):
    @cli.friendly
    def main(argv):
        raise UserError("set --image_size to at least 75")

    with pytest.raises(SystemExit) as exit_info:
        main(["command"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: set --image_size to at least 75\n"


@pytest.mark.parametrize("error", [ValueError("operands could not be broadcast"),
                                   RuntimeError("shape bug"), FileNotFoundError("x.npy")])
def test_any_other_error_propagates_unchanged(error):
    @cli.friendly
    def main(argv):
        raise error

    with pytest.raises(type(error)) as raised:
        main(["command"])
    assert raised.value is error


def test_a_bug_inside_a_command_keeps_its_traceback():
    # The summary command, with a library function that fails as a bug would.
    proc = python("""
        import runpy, sys
        import inception_jax.models as models

        def broken(*args, **kwargs):
            raise RuntimeError("a shape bug deep in the library")

        models.create = broken
        sys.argv = ["summary", "--model=inception_v4", "--image_size=75"]
        runpy.run_module("inception_jax.summary", run_name="__main__")
    """)
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    # Every frame down to the failing function: the command's main, then the library.
    assert 'inception_jax/summary.py", line' in proc.stderr and ", in main\n" in proc.stderr
    assert 'File "<string>", line 6, in broken' in proc.stderr
    assert proc.stderr.strip().endswith("RuntimeError: a shape bug deep in the library")
    assert "error: " not in proc.stderr


def test_setup_hides_gpus_from_tensorflow_without_importing_it():
    proc = python("""
        import sys
        from inception_jax import cli

        calls = []
        hide = cli.hide_gpus_from_tensorflow
        cli.hide_gpus_from_tensorflow = lambda tf: (calls.append(tf.__name__), hide(tf))
        cli.setup()
        cli.setup()  # idempotent: one hook
        assert "tensorflow" not in sys.modules, "setup imported TensorFlow"
        assert calls == []
        import tensorflow as tf

        assert calls == ["tensorflow"], calls
        assert tf.config.get_visible_devices("GPU") == []
        tf.constant(1.0) + 1  # TensorFlow still runs (on the CPU)
        cli.setup()  # TensorFlow already imported: hidden at once, and no error
        assert calls == ["tensorflow", "tensorflow"], calls
        print("ok")
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"


def test_commands_import_tensorflow_only_when_they_read_data():
    # Their flag checks (evaluate's --crops among them) answer before TensorFlow's ~3 s import;
    # `evaluate` imports the input pipeline only after them, and `plot` (which `sweep` runs at
    # its end) reads metrics.jsonl without the TensorBoard writer.
    proc = python("""
        import sys
        import inception_jax.aot, inception_jax.aot_grid, inception_jax.bench_grid
        import inception_jax.evaluate, inception_jax.import_weights, inception_jax.predict
        import inception_jax.plot, inception_jax.summary, inception_jax.sweep
        print(sorted(m for m in ("tensorflow", "tensorflow_datasets") if m in sys.modules))
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]"


def test_positional_arguments_or_a_usage_error():
    assert cli.positional(["cmd", "a", "b"], "usage") == ["a", "b"]
    with pytest.raises(UserError, match="Name at least one input: cmd FILE"):
        cli.positional(["cmd"], "cmd FILE")


def test_a_config_file_imports_its_package_from_any_directory(tmp_path):
    # The installed commands, run outside the checkout (no PYTHONPATH, another cwd): the config
    # file's `from configs import common` must work, so the run gets to its own check.
    env = {k: v for k, v in run_env().items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-m", "inception_jax.evaluate",
         f"--config={ROOT}/configs/inception_v3.py:smoke", f"--checkpoint={tmp_path}/none",
         f"--workdir={tmp_path}/out"],
        env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: No checkpoint directory at {tmp_path}/none: pass the --workdir of a training run.")


def test_setup_keeps_a_compilation_cache_the_user_chose(tmp_path):
    code = """
        import os, jax
        from inception_jax import cli
        cli.setup()
        print(jax.config.jax_compilation_cache_dir)
    """
    env = {**run_env(), "JAX_COMPILATION_CACHE_DIR": str(tmp_path)}
    chosen = python(code, env)
    assert chosen.stdout.strip() == str(tmp_path), chosen.stderr[-2000:]
    env.pop("JAX_COMPILATION_CACHE_DIR")
    default = python(code, env)
    assert default.stdout.strip() == cli.CACHE_DIR, default.stderr[-2000:]


@pytest.mark.parametrize("ending,status,err", [
    ("return None", 0, ""),
    ('raise UserError("set --crops")', 2, "error: set --crops\n"),
    ('sys.exit("stopped")', 1, "stopped\n"),
])
def test_a_command_exits_with_its_status_after_the_exit_handlers(tmp_path, ending, status, err):
    # cli.run skips the interpreter's teardown, not the threads, exit handlers or buffers.
    proc = python(f"""
        import atexit, sys, threading, time
        from inception_jax import cli
        from inception_jax.errors import UserError

        atexit.register(lambda: open({str(tmp_path / "handler_ran")!r}, "w").close())

        def late_writer():
            time.sleep(0.5)
            open({str(tmp_path / "thread_ran")!r}, "w").close()

        @cli.friendly
        def main(argv):
            threading.Thread(target=late_writer).start()
            print("working", end="")  # no newline: still in the buffer at the exit
            {ending}

        cli.run(main)
        print("not reached")
    """)
    assert proc.returncode == status, proc.stderr[-2000:]
    assert proc.stdout == "working" and proc.stderr == err
    assert (tmp_path / "handler_ran").exists() and (tmp_path / "thread_ran").exists()


def test_a_command_under_a_profiler_exits_normally(tmp_path):
    # cProfile writes its file after the script returns, which os._exit would skip.
    script = tmp_path / "command.py"
    script.write_text("from inception_jax import cli\ncli.run(lambda argv: None)\n")
    proc = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(tmp_path / "prof"),
                           str(script)], env=run_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "prof").stat().st_size > 0
