"""The (data, fsdp) mesh: the batch split over both axes, large arrays split over `fsdp`,
small ones replicated."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from configs import inception_resnet_v2
from inception_jax import sharding
from inception_jax.errors import UserError
from inception_jax.models import create

MB = 2**20


def test_mesh_has_data_and_fsdp_axes():
    assert jax.device_count() == 8
    mesh = sharding.create_mesh(2)
    assert mesh.axis_names == ("data", "fsdp")
    assert dict(mesh.shape) == {"data": 4, "fsdp": 2}
    one = sharding.create_mesh(1, jax.devices()[:1])
    assert dict(one.shape) == {"data": 1, "fsdp": 1}
    with pytest.raises(UserError, match=r"mesh.fsdp_axis=3 must be >= 1 and divide the 8"):
        sharding.create_mesh(3)


def test_the_batch_is_split_over_both_axes():
    mesh = sharding.create_mesh(2)
    batch = np.arange(16 * 3).reshape(16, 3)
    x = jax.device_put(batch, sharding.batch_sharding(mesh))
    rows = {}
    for shard in x.addressable_shards:
        assert shard.data.shape == (2, 3)  # 16 rows over all 8 devices
        rows[shard.device] = set(np.asarray(shard.data)[:, 0] // 3)
    assert set().union(*rows.values()) == set(range(16))
    assert sum(len(r) for r in rows.values()) == 16  # no row on two devices
    # Devices that share a data index but differ on fsdp hold different rows.
    pair = mesh.devices[0]
    assert rows[pair[0]].isdisjoint(rows[pair[1]])


@pytest.mark.parametrize("shape,dtype,min_mb,spec", [
    ((3, 3, 384, 384), jnp.float32, 1.0, PartitionSpec(None, None, None, "fsdp")),  # 5.1 MiB
    ((1, 1, 1088, 2080), jnp.float32, 4.0, PartitionSpec(None, None, None, "fsdp")),  # 8.6 MiB
    ((20, 1, 1, 384, 1088), jnp.float32, 4.0, PartitionSpec(None, None, None, None, "fsdp")),
    ((1536, 1001), jnp.float32, 4.0, PartitionSpec("fsdp", None)),  # 5.9 MiB; 1001 is odd
    ((1088,), jnp.float32, 4.0, PartitionSpec()),  # a BatchNorm vector: 4 KiB
    ((3, 3, 384, 384), jnp.bfloat16, 4.0, PartitionSpec()),  # 2.5 MiB in bf16
    ((3, 3, 384, 384), jnp.float32, 8.0, PartitionSpec()),  # below a higher threshold
    ((1001, 3), jnp.float32, 0.0, PartitionSpec()),  # no dimension divisible by 2
    ((), jnp.int32, 0.0, PartitionSpec()),  # the step counter
])
def test_state_shardings_split_large_arrays_and_replicate_small_ones(shape, dtype, min_mb, spec):
    mesh = sharding.create_mesh(2)
    tree = {"x": jax.ShapeDtypeStruct(shape, dtype)}
    got = sharding.state_shardings(mesh, tree, int(min_mb * MB))["x"]
    assert got.spec == spec
    if spec != PartitionSpec():
        # Each device holds half of the split dimension.
        split = list(spec).index("fsdp")
        expected = tuple(n // 2 if d == split else n for d, n in enumerate(shape))
        assert got.shard_shape(shape) == expected


def test_the_configs_threshold_shards_the_bulk_of_inception_resnet_v2():
    config = inception_resnet_v2.get_config()
    min_bytes = int(config.mesh.min_shard_mb * MB)
    model = create("inception_resnet_v2")
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 75, 75, 3)))
    mesh = sharding.create_mesh(2)
    shardings = sharding.state_shardings(mesh, variables, min_bytes)
    sizes = jax.tree.map(lambda x: int(np.prod(x.shape)) * 4, variables)
    leaves = jax.tree_util.tree_leaves_with_path(shardings)
    split_bytes = total = 0
    for (path, s), size in zip(leaves, jax.tree.leaves(sizes), strict=True):
        total += size
        name = jax.tree_util.keystr(path)
        if "'bn'" in name or name.endswith("['bias']"):
            assert s.spec == PartitionSpec(), name  # BN vectors and biases stay replicated
        if size >= min_bytes:
            assert "fsdp" in s.spec, name
            split_bytes += size
        else:
            assert s.spec == PartitionSpec(), name
    # 13 of the 228 arrays (stacked stage kernels, the head) hold 83% of the bytes.
    assert split_bytes / total > 0.8
    # Without a threshold every array with an even dimension is split.
    with_zero = sharding.state_shardings(mesh, variables, 0)
    for x, s in zip(jax.tree.leaves(variables), jax.tree.leaves(with_zero), strict=True):
        assert ("fsdp" in s.spec) == any(n % 2 == 0 for n in x.shape)
