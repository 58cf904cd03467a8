"""Our XLA flags: added only where jaxlib has them, never over the user's, and in effect."""

import subprocess
import sys

import jaxlib
import pytest

from inception_jax.xla_flags import YNN_FLAG, with_speed_flags
from tests.helpers import ROOT, run_env


def test_flags_are_added_once_and_only_to_known_jaxlib_versions():
    added = with_speed_flags("--xla_force_host_platform_device_count=8", "0.10.2")
    assert added == ("--xla_force_host_platform_device_count=8 "
                     f"{YNN_FLAG}=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT")
    assert with_speed_flags(added, "0.10.2") == added
    assert with_speed_flags("", "0.10.0") == f"{YNN_FLAG}=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
    users = f"{YNN_FLAG}=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"
    assert with_speed_flags(users, "0.10.2") == users
    assert with_speed_flags("--a=1", "0.9.2") == "--a=1"  # jaxlib without the flag


def test_commands_move_cpu_convolutions_out_of_ynnpack():
    """What every command does first (cli.setup) takes a large conv out of YNNPACK."""
    if with_speed_flags("", jaxlib.__version__) == "":
        pytest.skip(f"jaxlib {jaxlib.__version__} is not known to have {YNN_FLAG}")
    probe = (
        "from inception_jax import cli; cli.setup()\n"
        "import jax, jax.numpy as jnp\n"
        "x, k = jnp.ones((2, 17, 17, 32)), jnp.ones((3, 3, 32, 64))\n"
        "conv = jax.jit(lambda x, k: jax.lax.conv_general_dilated(\n"
        "    x, k, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')))\n"
        "hlo = conv.lower(x, k).compile().as_text()\n"
        "print('convolution(' in hlo, '__ynn_fusion' in hlo)\n"
    )
    env = run_env()  # XLA_FLAGS without ours; YNNPACK takes this conv by default
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "False"]
