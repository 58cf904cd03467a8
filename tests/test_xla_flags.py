"""Our XLA flags: added only where jaxlib has them, never over the user's, and in effect."""

import os

import jax
import jax.numpy as jnp
import jaxlib
import pytest

from inception_jax.xla_flags import YNN_FLAG, with_speed_flags


def test_flags_are_added_once_and_only_to_known_jaxlib_versions():
    added = with_speed_flags("--xla_force_host_platform_device_count=8", "0.10.2")
    assert added == ("--xla_force_host_platform_device_count=8 "
                     f"{YNN_FLAG}=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT")
    assert with_speed_flags(added, "0.10.2") == added
    assert with_speed_flags("", "0.10.0") == f"{YNN_FLAG}=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
    users = f"{YNN_FLAG}=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"
    assert with_speed_flags(users, "0.10.2") == users
    assert with_speed_flags("--a=1", "0.9.2") == "--a=1"  # jaxlib without the flag


def test_cpu_convolutions_leave_ynnpack_in_this_process():
    if YNN_FLAG not in os.environ.get("XLA_FLAGS", ""):
        pytest.skip(f"jaxlib {jaxlib.__version__} is not known to have {YNN_FLAG}")
    x, k = jnp.ones((2, 17, 17, 32)), jnp.ones((3, 3, 32, 64))  # YNNPACK takes this one by default
    conv = jax.jit(lambda x, k: jax.lax.conv_general_dilated(
        x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
    hlo = conv.lower(x, k).compile().as_text()
    assert "convolution(" in hlo and "__ynn_fusion" not in hlo
