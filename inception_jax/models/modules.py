"""The Flax modules shared by all four networks: conv+BN+ReLU, the Inception block (plain or
scaled-residual), a stage of repeated blocks under `nn.scan`, and the auxiliary head."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception_jax.models.batchnorm import GroupedBatchNorm
from inception_jax.models.specs import BlockSpec, Conv, Layer, Pool, Split

# He-normal (truncated): keeps activations of the deep ReLU trunk at unit scale at init.
conv_init = nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(unsafe_hash=True)
class LayerKnobs:
    """The knobs every layer reads, defined once: `InceptionNet` takes them as fields (this is
    its mixin) and passes them down to its layers inside `Options`."""

    width: float = 1.0
    dtype: str = "float32"  # compute dtype (a key of DTYPES); parameters stay float32
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    bn_scale: bool = True
    pool_count_include_pad: bool = False
    remat: bool = False
    scan_unroll: int = 0  # blocks per loop iteration of a stage; 0 = auto (CPU, TPU: all)
    conv_impl: str = "auto"  # "xla", "rewrite" (1x1 as matmul, n x 1 as 1 x n), "auto"
    bn_group_size: int = 0  # examples per BatchNorm statistics group; 0 = the whole batch
    # The compilation target that "auto" choices follow; None = JAX's default backend. Not a
    # config knob: the trainer sets it from the mesh's devices.
    platform: str | None = None


@dataclasses.dataclass(unsafe_hash=True)
class Options(LayerKnobs):
    """`LayerKnobs` and the train/eval switch, as one static value handed to every layer."""

    train: bool = False

    @classmethod
    def of(cls, knobs: LayerKnobs, train: bool) -> Options:
        """The options of a network (or anything with the `LayerKnobs` fields) in a mode."""
        fields = {f.name: getattr(knobs, f.name) for f in dataclasses.fields(LayerKnobs)}
        return cls(train=train, **fields)

    @property
    def compute_dtype(self) -> Any:
        """The jnp dtype layers compute in."""
        return DTYPES[self.dtype]


CONV_IMPLS = ("auto", "xla", "rewrite", "patches")
PLATFORMS = ("cpu", "gpu", "tpu")


def target_platform(platform: str | None) -> str:
    """The platform the model is compiled for: `platform`, else JAX's default backend.

    The trainer sets it from the mesh's devices, so a CPU host compiling for a TPU topology
    (`python -m inception_jax.aot`) makes the same choices as a run on the TPU.
    """
    platform = platform or jax.default_backend()
    return "gpu" if platform in ("cuda", "rocm") else platform


def use_rewrite(conv_impl: str, platform: str | None = None) -> bool:
    """Whether convs are rewritten: "rewrite" always, "auto" when compiling for CPU only.

    On CPU, XLA's weight gradient of 1×1 and n×1 convolutions is several times slower than
    that of an equivalent matmul or 1×n convolution (BENCHMARKS.md). GPU and TPU compilers
    have no such gap that we measured, so "auto" leaves them XLA's convolution.
    """
    return conv_impl == "rewrite" or (
        conv_impl == "auto" and target_platform(platform) == "cpu"
    )


def stage_unroll(scan_unroll: int, repeat: int, platform: str | None = None) -> int:
    """Blocks per loop iteration of a scanned stage; `scan_unroll=0` is "auto".

    Auto unrolls the stage completely when compiling for CPU, where a rolled loop made the
    backward pass 3-5x slower, and for TPU, where the unrolled IR-v2 train step needs 40% less
    HBM (7.8 vs 13.0 GiB a v5e chip at 64 images; 128 fit rolled only with remat) for 2-4x the
    compile time (BENCHMARKS.md). GPU keeps one block per iteration: the loop compiles once for all
    repeats (not measured there).
    """
    if scan_unroll == 0:
        return repeat if target_platform(platform) in ("cpu", "tpu") else 1
    return max(1, min(scan_unroll, repeat))


def patches_conv2d(x: jnp.ndarray, kernel: jnp.ndarray, stride: int,
                   padding: Any) -> jnp.ndarray:
    """NHWC × HWIO convolution as one matmul of the image's patches (im2col) by the kernel.

    Slower alone, but under `vmap` over members with their own kernels it is one batched
    matmul, where XLA's CPU convolution becomes a grouped convolution (`conv_impl="patches"`)."""
    kh, kw = kernel.shape[:2]
    if isinstance(padding, str):
        padding = jax.lax.padtype_to_pads(x.shape[1:3], (kh, kw), (stride, stride), padding)
    x = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    h, w = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
    windows = [x[:, i:i + (h - 1) * stride + 1:stride, j:j + (w - 1) * stride + 1:stride]
               for i in range(kh) for j in range(kw)]
    cols = windows[0] if len(windows) == 1 else jnp.concatenate(windows, axis=-1)
    return jnp.einsum("nhwk,ko->nhwo", cols, kernel.reshape(-1, kernel.shape[-1]))


def conv2d(x: jnp.ndarray, kernel: jnp.ndarray, stride: int, padding: Any,
           rewrite: bool, patches: bool = False) -> jnp.ndarray:
    """NHWC × HWIO convolution. With `rewrite`, a stride-1 1×1 conv is a matmul and an n×1
    conv runs as a 1×n conv on the transposed image: same result, faster CPU gradients. With
    `patches`, every conv is a matmul of patches (`patches_conv2d`)."""
    if patches:
        return patches_conv2d(x, kernel, stride, padding)
    kh, kw = kernel.shape[:2]
    if rewrite and stride == 1 and kh == kw == 1:
        return jnp.einsum("nhwc,co->nhwo", x, kernel[0, 0])
    if rewrite and stride == 1 and kw == 1 and kh > 1:
        swapped = padding if isinstance(padding, str) else tuple(reversed(padding))
        y = conv2d(jnp.swapaxes(x, 1, 2), jnp.swapaxes(kernel, 0, 1), 1, swapped, False)
        return jnp.swapaxes(y, 1, 2)
    return jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


class Conv2D(nn.Module):
    """A 2-D convolution with Flax's parameter layout (`kernel` HWIO, optional `bias`)."""

    features: int
    kernel_size: tuple[int, int]
    stride: int = 1
    padding: Any = "SAME"
    use_bias: bool = False
    dtype: Any = jnp.float32
    conv_impl: str = "auto"
    platform: str | None = None

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        shape = (*self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", conv_init, shape, jnp.float32)
        y = conv2d(x.astype(self.dtype), kernel.astype(self.dtype), self.stride, self.padding,
                   use_rewrite(self.conv_impl, self.platform), self.conv_impl == "patches")
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(self.dtype)
        return y


def scaled_width(features: int, width: float) -> int:
    """Filter count after the width multiplier (at least one filter)."""
    return max(1, int(round(features * width)))


class ConvBN(nn.Module):
    """Conv (no bias) → BatchNorm → ReLU, the basic unit of every Inception network."""

    features: int
    kernel: tuple[int, int]
    stride: int
    padding: Any
    opts: Options

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        o = self.opts
        x = Conv2D(
            scaled_width(self.features, o.width),
            self.kernel,
            self.stride,
            self.padding,
            dtype=o.compute_dtype,
            conv_impl=o.conv_impl,
            platform=o.platform,
            name="conv",
        )(x)
        return nn.relu(batch_norm(o, "bn")(x))


def batch_norm(
    opts: Options, name: str, use_scale: bool | None = None,
    scale_init: Any = nn.initializers.ones,
) -> nn.Module:
    """The BatchNorm of every layer: per-group statistics when `bn_group_size` is set, else
    Flax's own `nn.BatchNorm` over the whole batch (bit for bit). `use_scale` defaults to the
    network's `bn_scale`."""
    kwargs = dict(
        use_running_average=not opts.train,
        momentum=opts.bn_momentum,
        epsilon=opts.bn_epsilon,
        use_scale=opts.bn_scale if use_scale is None else use_scale,
        scale_init=scale_init,
        dtype=opts.compute_dtype,
        name=name,
    )
    if opts.bn_group_size:
        return GroupedBatchNorm(group_size=opts.bn_group_size, **kwargs)
    return nn.BatchNorm(**kwargs)


def pool(x: jnp.ndarray, spec: Pool, opts: Options) -> jnp.ndarray:
    """Max or average pooling as the spec says; average pools exclude padding by default."""
    window, strides = (spec.window, spec.window), (spec.stride, spec.stride)
    if spec.kind == "max":
        return nn.max_pool(x, window, strides, padding=spec.padding)
    return nn.avg_pool(
        x, window, strides, padding=spec.padding, count_include_pad=opts.pool_count_include_pad
    )


class InceptionBlock(nn.Module):
    """Runs a `BlockSpec`: parallel branches concatenated on channels; optionally a residual.

    Each conv is created under the name its spec gives it (`Conv.name`, `b{branch}_{k}`), the
    names the weight importers read. A residual block adds `proj`, a linear 1×1 conv with bias
    back to the trunk width, multiplies it by `residual.scale`, adds it to the input and
    applies ReLU unless `residual.activate` is False.

    A block with a structure of its own subclasses this module, overrides `branch` (one
    branch's layers) or `merge` (branch outputs → block output), and is named by its spec's
    `module` field: its convs keep their spec names, so the weight importers still fit.

    What multiplies the residual branch follows `Residual.mode`: "fixed", the constant
    `scale` (paper §3.3: 0.1-0.3); "scalar", a learned scalar `residual_scale` initialised at
    `scale` (SkipInit, De & Smith 2020; ReZero, Bachlechner et al. 2020, at 0); "channel", a
    learned per-channel `residual_scale` (LayerScale, Touvron et al. 2021, CaiT); "bn", a
    BatchNorm `proj_bn` on the branch with γ initialised at `scale` (a BN ending each residual
    branch as in ResNet; γ=0 is Goyal et al. 2017's zero-γ), and `proj` without bias.
    """

    spec: BlockSpec
    opts: Options

    def branch(self, h: jnp.ndarray, layers: tuple[Layer, ...]) -> jnp.ndarray:
        """Applies one branch's layers in order (a `Split` concatenates its sub-branches)."""
        for layer in layers:
            if isinstance(layer, Conv):
                h = ConvBN(
                    layer.features, layer.kernel, layer.stride, layer.padding, self.opts,
                    name=layer.name,
                )(h)
            elif isinstance(layer, Pool):
                h = pool(h, layer, self.opts)
            elif isinstance(layer, Split):
                h = jnp.concatenate([self.branch(h, b) for b in layer.branches], -1)
            else:
                raise TypeError(f"unknown layer spec {layer!r}")
        return h

    def merge(self, x: jnp.ndarray, outs: list[jnp.ndarray]) -> jnp.ndarray:
        """The block's output from its input and its branches' outputs."""
        y = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=-1)
        res = self.spec.residual
        if res is None:
            return y
        features = x.shape[-1]
        y = Conv2D(
            features, (1, 1), use_bias=res.mode != "bn", dtype=self.opts.compute_dtype,
            conv_impl=self.opts.conv_impl, platform=self.opts.platform, name="proj",
        )(y)
        init = nn.initializers.constant(res.scale)
        if res.mode == "bn":
            branch = batch_norm(self.opts, "proj_bn", use_scale=True, scale_init=init)(y)
        elif res.mode in ("scalar", "channel"):
            shape = () if res.mode == "scalar" else (features,)
            branch = self.param("residual_scale", init, shape, jnp.float32).astype(y.dtype) * y
        elif res.mode == "fixed":
            branch = jnp.asarray(res.scale, y.dtype) * y
        else:
            raise ValueError(f"unknown residual mode {res.mode!r}")
        if self.is_mutable_collection("monitor"):  # only when the health monitor asks
            rms = lambda t: jnp.sqrt(jnp.mean(jnp.square(t.astype(jnp.float32))))
            self.sow("monitor", "branch_rms", rms(branch))
            self.sow("monitor", "trunk_rms", rms(x))
        x = x + branch
        return nn.relu(x) if res.activate else x

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return self.merge(x, [self.branch(x, b) for b in self.spec.branches])


def apply_block(
    x: jnp.ndarray, spec: BlockSpec, opts: Options, name: str, repeat: int | None
) -> jnp.ndarray:
    """Applies one block (`repeat=None`) or a stage of `repeat` identical blocks.

    A stage runs under `nn.scan`, so its parameters are stacked on a leading axis and 20
    blocks compile like one. Must be called inside a compact method of the parent module.
    """
    module = spec.module or InceptionBlock
    block_cls = nn.remat(module, prevent_cse=repeat is None) if opts.remat else module
    if repeat is None:
        return block_cls(spec, opts, name=name)(x)
    if repeat == 0:
        return x

    def body(module: nn.Module, carry: jnp.ndarray, _: Any):
        return module(carry), None

    scanned = nn.scan(
        body,
        variable_axes={"params": 0, "batch_stats": 0, "monitor": 0},
        split_rngs={"params": True},
        length=repeat,
        unroll=stage_unroll(opts.scan_unroll, repeat, opts.platform),
    )
    x, _ = scanned(block_cls(spec, opts, name=name), x, None)
    return x


class MemberDropout(nn.Module):
    """Flax's `nn.Dropout` for a rate that is an array (a population member's rate).

    Same mask from the same key (create it under the name flax's would get, "Dropout_0"); it
    always draws the mask, since a traced rate cannot be tested for 0 (a rate of 0 keeps all).
    """

    rate: jax.Array
    deterministic: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        if self.deterministic:
            return x
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(self.make_rng("dropout"), p=keep, shape=x.shape)
        # In x's dtype, as flax divides by a Python float (bfloat16 stays bfloat16).
        return jax.lax.select(mask, x / keep.astype(x.dtype), jnp.zeros_like(x))


class AuxHead(nn.Module):
    """The auxiliary classifier of slim's v3/v4/IR-v2, adapted to any map size.

    avg-pool 5×5/3 → 1×1 conv 128 → 5×5 conv 768 → global mean → dense. The 5×5 kernel keeps
    its shape at every input size (so weights transfer across resolutions): smaller maps are
    zero-padded to 5×5, larger ones averaged after the conv (as timm does).
    """

    num_classes: int
    opts: Options

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        h, w = x.shape[1:3]
        window = (min(5, h), min(5, w))
        x = nn.avg_pool(x, window, (3, 3), padding="VALID")
        x = ConvBN(128, (1, 1), 1, "VALID", self.opts, name="conv_0")(x)
        h, w = x.shape[1:3]
        pads = tuple(((5 - s) // 2, 5 - s - (5 - s) // 2) if s < 5 else (0, 0) for s in (h, w))
        x = ConvBN(768, (5, 5), 1, pads, self.opts, name="conv_1")(x)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.opts.compute_dtype, name="head")(x)
