"""SlowFast-R50's fast pathway in Flax NNX: the paper's 256-d motion feature of a chunk.

The motion branch reads, per one-second chunk (32 frames at 224x224, normalized
with mean 0.45 and std 0.225), one 256-d feature of a frozen SlowFast-R50
trained on Kinetics-400 (docs/method.md, "Motion branch"). The authors compute it
with pytorchvideo's `slowfast_r50` (`create_slowfast(model_depth=50)`): they
run `blocks[0..4]` on [slow, fast] inputs, then average the fast tensor with
`blocks[5].pool[1]` (AvgPool3d over its whole 32x7x7 extent) and the head's
AdaptiveAvgPool3d(1). That is the global average of the fast pathway's last
stage, [B, 256, 32, 7, 7] -> [B, 256].

Why the fast pathway alone computes it exactly: every block of pytorchvideo's
SlowFast (`MultiPathWayWithFuse`) runs pathway 0 on the slow tensor and pathway 1
on the fast tensor, each on its own, and then its fusion (`FuseFastToSlow`)
returns `[cat(x_slow, conv(x_fast)), x_fast]`: the fast tensor is read, never
written, and the slow one never reaches the fast pathway (the last block's
fusion is the identity, and `blocks[5]` pools each pathway separately). So the
fast tensor after block k is a function of the fast input and the fast
pathway's own weights only, and the same operations, in the same order, give
the same numbers. The slow pathway, the lateral connections and the
classification head are never needed. tests/models/test_slowfast.py checks this
against pytorchvideo's own model, including that changing the slow input
leaves the fast feature unchanged.

The fast pathway (pytorchvideo's defaults for depth 50, beta = 1/8):
    stem    Conv3d 3->8 (5x7x7, stride 1x2x2, pad 2x3x3), BN, ReLU,
            MaxPool3d (1x3x3, stride 1x2x2, pad 0x1x1)
    stage k bottleneck blocks (3, 4, 6, 3), widths inner/out 8/32, 16/64,
            32/128, 64/256: Conv3d 3x1x1 (pad 1x0x0), BN, ReLU; Conv3d 1x3x3
            (spatial stride 1, 2, 2, 2 in the stage's first block, pad 0x1x1),
            BN, ReLU; Conv3d 1x1x1, BN; plus a shortcut (Conv3d 1x1x1 with the
            block's stride, BN, in each stage's first block; the identity in the
            others); ReLU after the sum.
Convolutions carry no bias; each BatchNorm (eval mode, eps 1e-5) is folded into
the convolution before it when the weights are loaded (`load`): W' = W * g,
b' = beta - mean * g, g = gamma / sqrt(var + eps), computed in float64.

Layout is channels-last (NDHWC activations, DHWIO kernels). Every convolution
of the fast pathway strides in time by 1 and in space only, so `ConvBN` never
runs a 3-D convolution; it has two lowerings (`LOWERINGS`), the same sums in
another order:
  "taps"     the kt temporal taps on the output side: a kh x kw 2-D convolution
             of each frame to kt * Cout channels (a matmul over channels for the
             3x1x1 convolutions), then output frame t sums tap d of frame
             t + d - kt//2. XLA:CPU's default (`default_lowering`): it moves
             less data than stacking inputs (conv_a narrows the channels 4x), and
             it gives the stem (3 -> 5 x 8 channels) a shape that XLA:CPU hands
             to its YNNPACK convolutions instead of its generic Eigen path
             (docs/2026-12-slowfast-speed.md).
  "stacked"  each output frame's kt input frames stacked along the channels, a
             kh x kw 2-D convolution over batch x time (docs/2026-11-slowfast.md);
             the lowering for GPU and TPU backends, which was not re-measured there.
`Extractor` jit-compiles the network over a batch of uint8 chunks [N, T, H, W, 3],
normalization included, once per batch shape, and with a mesh shards the batch over
the data axes (the `batch` rule of w2s_vqa.sharding) with the weights replicated:
they are half a million numbers.

The weights file is the safetensors file w2s_vqa.convert.slowfast writes from a
pytorchvideo checkpoint: for every convolution at module path P, `P.kernel`
(DHWIO) and its BatchNorm's `P.norm.weight`, `P.norm.bias`, `P.norm.running_mean`
and `P.norm.running_var`, unfolded, so the file is the checkpoint's own numbers.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# Normalization of the authors' feature extraction (torchvision Normalize on 0..1 RGB).
PIXEL_MEAN = 0.45
PIXEL_STD = 0.225
FRAMES_PER_CHUNK = 32
CHUNK_SIZE = 224
FEATURE_DIM = 256
BN_EPS = 1e-5  # pytorchvideo's create_slowfast default; checkpoints do not store it

STEM_WIDTH = 8
STEM_KERNEL = (5, 7, 7)
# pytorchvideo's blocks index k = 1..4: (blocks, inner width, output width, spatial stride)
STAGES: tuple[tuple[int, int, int, int], ...] = ((3, 8, 32, 1), (4, 16, 64, 2), (6, 32, 128, 2), (3, 64, 256, 2))
TEMPORAL_KERNEL = 3  # conv_a of every fast-pathway stage is 3x1x1
# The BatchNorm tensors stored beside each kernel, under "P.norm.<name>".
NORM_TENSORS = ("weight", "bias", "running_mean", "running_var")

_DIMENSIONS_2D = ("NHWC", "HWIO", "NHWC")
# Chunks per compiled call of `Extractor` on the CPU (its docstring).
CPU_CHUNKS_PER_CALL = 1
# How ConvBN computes a convolution (module docstring).
LOWERINGS = ("taps", "stacked")


def default_lowering(platform: str | None = None) -> str:
    """The lowering for a JAX platform ("cpu", "gpu", "tpu"; default: jax.default_backend()):
    "taps" on the CPU, where it was measured faster (docs/2026-12-slowfast-speed.md), else "stacked"."""
    return "taps" if (platform or jax.default_backend()) == "cpu" else "stacked"


# Problems a WeightsError names in its message before the rest are only counted.
MAX_PROBLEMS_NAMED = 20


class WeightsError(ValueError):
    """A SlowFast weights file that does not fit the fast pathway; lists every problem."""

    def __init__(self, path: str, problems: list[str]):
        self.path, self.problems = path, problems
        # One line (a log or `grep` shows it whole): each problem's own line breaks folded, the
        # first MAX_PROBLEMS_NAMED named and the rest counted; `problems` keeps every one.
        named = "; ".join(" ".join(str(p).split()) for p in problems[:MAX_PROBLEMS_NAMED])
        more = f"; and {len(problems) - MAX_PROBLEMS_NAMED} more" if len(problems) > MAX_PROBLEMS_NAMED else ""
        super().__init__(f"{path}: {len(problems)} problem(s): {named}{more}")


class ConvBN(nnx.Module):
    """A bias-free Conv3d and the eval-mode BatchNorm after it, folded into one
    convolution with a bias. Input [B, T, H, W, Cin] -> [B, T', H', W', Cout];
    padding is kernel // 2 on every axis, as pytorchvideo pads."""

    def __init__(self, cin: int, cout: int, kernel: Sequence[int], stride: Sequence[int] = (1, 1, 1), *,
                 rngs: nnx.Rngs):
        if stride[0] != 1:
            raise ValueError(f"temporal stride {stride[0]}: the fast pathway strides in space only")
        shape = (*kernel, cin, cout)
        # He initialization, only for models that are not loaded (tests, shapes).
        std = math.sqrt(2.0 / math.prod(shape[:-1]))
        self.kernel = nnx.Param(std * jax.random.normal(rngs.params(), shape, jnp.float32),
                                logical_axes=(None,) * 5)
        self.bias = nnx.Param(jnp.zeros((cout,), jnp.float32), logical_axes=(None,))
        self.stride = tuple(stride)
        self.padding = tuple((k // 2, k // 2) for k in kernel)

    def __call__(self, x: jax.Array, lowering: str = "taps") -> jax.Array:
        # With temporal stride 1, output frame t reads input frames t - kt//2 .. t + kt//2
        # (zero-padded), so the kt x kh x kw convolution is kt kh x kw 2-D ones over batch x time
        # (module docstring, `LOWERINGS`): XLA:CPU runs its 3-D convolution much slower.
        kt, kh, kw, cin, cout = self.kernel.shape
        b, t, h, w, _ = x.shape
        kernel = self.kernel[...].astype(x.dtype)
        pad = self.padding[0]
        if kt > 1 and lowering == "taps":
            kernel = kernel.transpose(1, 2, 3, 0, 4).reshape(kh, kw, cin, kt * cout)
            y = self._conv2d(x.reshape(b * t, h, w, cin), kernel)
            y = jnp.pad(y.reshape(b, t, *y.shape[1:3], kt, cout), ((0, 0), pad, (0, 0), (0, 0), (0, 0), (0, 0)))
            y = sum(y[:, d:d + t, :, :, d] for d in range(kt))
        elif lowering in LOWERINGS:
            if kt > 1:
                x = jnp.pad(x, ((0, 0), pad, (0, 0), (0, 0), (0, 0)))
                x = jnp.concatenate([x[:, d:d + t] for d in range(kt)], axis=-1)
            kernel = kernel.transpose(1, 2, 0, 3, 4).reshape(kh, kw, kt * cin, cout)
            y = self._conv2d(x.reshape(b * t, h, w, kt * cin), kernel)
            y = y.reshape(b, t, *y.shape[1:])
        else:
            raise ValueError(f"lowering must be one of {', '.join(LOWERINGS)}, not {lowering!r}")
        return y + self.bias[...].astype(x.dtype)

    def _conv2d(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
        return jax.lax.conv_general_dilated(x, kernel, self.stride[1:], self.padding[1:],
                                            dimension_numbers=_DIMENSIONS_2D)


class Bottleneck(nnx.Module):
    """pytorchvideo's ResBlock with a BottleneckBlock branch (fast pathway: conv_a is 3x1x1)."""

    def __init__(self, cin: int, inner: int, cout: int, stride: int, *, rngs: nnx.Rngs):
        self.conv_a = ConvBN(cin, inner, (TEMPORAL_KERNEL, 1, 1), rngs=rngs)
        self.conv_b = ConvBN(inner, inner, (1, 3, 3), (1, stride, stride), rngs=rngs)
        self.conv_c = ConvBN(inner, cout, (1, 1, 1), rngs=rngs)
        # pytorchvideo adds the shortcut convolution where the shape changes.
        self.shortcut = (ConvBN(cin, cout, (1, 1, 1), (1, stride, stride), rngs=rngs)
                         if cin != cout or stride != 1 else None)

    def __call__(self, x: jax.Array, lowering: str = "taps") -> jax.Array:
        y = jax.nn.relu(self.conv_a(x, lowering))
        y = jax.nn.relu(self.conv_b(y, lowering))
        y = self.conv_c(y, lowering)
        return jax.nn.relu((x if self.shortcut is None else self.shortcut(x, lowering)) + y)


class FastPathway(nnx.Module):
    """The fast pathway of SlowFast-R50: stem and four residual stages (module docstring).

    Submodules: `stem` and `stage1` ... `stage4` (nnx.List of Bottleneck),
    numbered as pytorchvideo's `blocks[1..4]`.
    """

    def __init__(self, *, rngs: nnx.Rngs):
        self.stem = ConvBN(3, STEM_WIDTH, STEM_KERNEL, (1, 2, 2), rngs=rngs)
        width = STEM_WIDTH
        for k, (depth, inner, out, stride) in enumerate(STAGES, start=1):
            blocks = []
            for j in range(depth):
                blocks.append(Bottleneck(width, inner, out, stride if j == 0 else 1, rngs=rngs))
                width = out
            setattr(self, f"stage{k}", nnx.List(blocks))

    def __call__(self, x: jax.Array, lowering: str | None = None) -> jax.Array:
        """Normalized frames [B, T, H, W, 3] (float) -> the last stage's output [B, T, H/32, W/32, 256]
        (spatial sizes rounded up at each stride), in x's dtype. `lowering`: one of
        `LOWERINGS`, by default `default_lowering()`; ValueError for another."""
        lowering = default_lowering() if lowering is None else lowering
        x = jax.nn.relu(self.stem(x, lowering))
        # MaxPool3d(1x3x3, stride 1x2x2, pad 0x1x1): PyTorch pads max pooling with -inf.
        x = jax.lax.reduce_window(x, jnp.array(-jnp.inf, x.dtype), jax.lax.max, (1, 1, 3, 3, 1), (1, 1, 2, 2, 1),
                                  ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)))
        for k in range(1, len(STAGES) + 1):
            for block in getattr(self, f"stage{k}"):
                x = block(x, lowering)
        return x

    def features(self, x: jax.Array, lowering: str | None = None) -> jax.Array:
        """Normalized frames [B, T, H, W, 3] -> float32 [B, 256]: the global average of the
        last stage over time and space (the authors' fast-pathway pooling)."""
        return jnp.mean(self(x, lowering).astype(jnp.float32), axis=(1, 2, 3))


def normalize(chunks: jax.Array, dtype=jnp.float32) -> jax.Array:
    """uint8 RGB [..., 3] -> (x / 255 - 0.45) / 0.225 in `dtype` (computed in float32)."""
    x = chunks.astype(jnp.float32) / 255.0
    return ((x - PIXEL_MEAN) / PIXEL_STD).astype(dtype)


# ----------------------------------------------------------------------------- weights
def abstract_model() -> FastPathway:
    """The fast pathway's structure and shapes, without computing any weights."""
    return nnx.eval_shape(lambda: FastPathway(rngs=nnx.Rngs(0)))


def _path_str(path) -> str:
    return ".".join(str(p) for p in path)


def conv_paths(model: FastPathway) -> dict[str, ConvBN]:
    """Module path (e.g. "stage2.0.shortcut") -> its ConvBN, for every convolution."""
    return {_path_str(path): node for path, node in nnx.iter_graph(model) if isinstance(node, ConvBN)}


def expected_tensors(model: FastPathway | None = None) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor a weights file holds (module docstring)."""
    model = model if model is not None else abstract_model()
    shapes = {}
    for path, conv in conv_paths(model).items():
        kernel = tuple(conv.kernel.shape)
        shapes[f"{path}.kernel"] = kernel
        shapes.update({f"{path}.norm.{name}": (kernel[-1],) for name in NORM_TENSORS})
    return shapes


def check_weights(path: str | os.PathLike) -> None:
    """Check a weights file's names and shapes from its header, reading no tensor.

    Raises WeightsError listing every missing, unexpected and mis-shaped tensor,
    or naming a file that is absent or not safetensors.
    """
    path = os.fspath(path)
    _file_shapes(path, expected_tensors())


def _file_shapes(path: str, wanted: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise WeightsError(path, ["no such file (data.slowfast_weights; write it with w2s-vqa convert-slowfast)"])
    try:
        with safe_open(path, framework="numpy") as f:
            shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    except Exception as e:  # safetensors raises its own error types for a file that is not one
        raise WeightsError(path, [f"not a safetensors file ({type(e).__name__}: {e})"]) from None
    problems = [f"missing tensor {key} {list(shape)}" for key, shape in wanted.items() if key not in shapes]
    problems += [f"unexpected tensor {key}" for key in shapes if key not in wanted]
    problems += [f"mis-shaped tensor {key}: {list(shapes[key])}, expected {list(wanted[key])}"
                 for key in wanted if key in shapes and shapes[key] != wanted[key]]
    if problems:
        raise WeightsError(path, problems)
    return shapes


def fold_batch_norm(kernel: np.ndarray, weight, bias, mean, var, eps: float = BN_EPS) -> tuple[np.ndarray, np.ndarray]:
    """(kernel [..., Cout] * g, beta - mean * g) with g = gamma / sqrt(var + eps), in float64,
    returned as float32: the convolution followed by eval-mode BatchNorm as one convolution."""
    g = np.asarray(weight, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    folded = np.asarray(kernel, np.float64) * g
    shift = np.asarray(bias, np.float64) - np.asarray(mean, np.float64) * g
    return folded.astype(np.float32), shift.astype(np.float32)


def load(path: str | os.PathLike) -> FastPathway:
    """The fast pathway with the weights of a file w2s_vqa.convert.slowfast wrote, batch norm folded.

    Raises WeightsError listing every missing, unexpected or mis-shaped tensor,
    and every tensor holding NaN or infinite values or a negative variance.
    """
    from safetensors import safe_open

    path = os.fspath(path)
    abstract = abstract_model()
    _file_shapes(path, expected_tensors(abstract))
    problems, values = [], {}
    with safe_open(path, framework="numpy") as f:
        for conv_path in conv_paths(abstract):
            tensors = {name: f.get_tensor(f"{conv_path}.{name}")
                       for name in ("kernel", *(f"norm.{n}" for n in NORM_TENSORS))}
            bad = [name for name, value in tensors.items() if not np.isfinite(value).all()]
            problems += [f"{conv_path}.{name}: NaN or infinite values" for name in bad]
            if (tensors["norm.running_var"] < 0).any():
                problems.append(f"{conv_path}.norm.running_var: negative variance")
            if not bad:
                values[conv_path] = fold_batch_norm(tensors["kernel"], *(tensors[f"norm.{n}"] for n in NORM_TENSORS))
    if problems:
        raise WeightsError(path, problems)
    graphdef, state = nnx.split(abstract)
    flat = []
    for key, variable in nnx.to_flat_state(state):
        conv_path, name = _path_str(key[:-1]), key[-1]
        value = values[conv_path][0 if name == "kernel" else 1]
        flat.append((key, variable.replace(jnp.asarray(value))))
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


# ----------------------------------------------------------------------------- features
class Extractor:
    """Chunks -> 256-d features with a loaded FastPathway, jit-compiled.

    `__call__` takes uint8 RGB chunks [N, T, H, W, 3] (the authors' are
    T = 32, H = W = 224) and returns float32 numpy [N, 256]. N is padded up to
    one of a few batch sizes (powers of two below `max_batch`, and `max_batch`),
    so that a run compiles at most a handful of programs; more than `max_batch`
    chunks go in several calls. With `mesh`, the weights are replicated on it
    and each batch is sharded over the mesh axes that `rules` map the logical
    axis `batch` to (w2s_vqa.sharding; default: data and fsdp), every batch
    size rounded up to a multiple of their size. `dtype` is the compute dtype
    (bfloat16 on accelerators); the weights stay float32 and the average is
    taken in float32. `lowering` (one of `LOWERINGS`) defaults to
    `default_lowering` of the mesh's platform, or of JAX's default backend.
    On the CPU without a mesh, `max_batch` is 1 whatever is passed: there one chunk
    per call ran fastest per chunk (a chunk's activations stay in the caches;
    docs/2026-12-slowfast-speed.md), so larger calls are split.
    Raises ValueError for max_batch < 1 or an unknown lowering.
    """

    def __init__(self, model: FastPathway, *, max_batch: int = 8, mesh: jax.sharding.Mesh | None = None,
                 rules=None, dtype: str = "float32", lowering: str | None = None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if lowering is None:
            lowering = default_lowering(mesh.devices.flat[0].platform if mesh is not None else None)
        if lowering not in LOWERINGS:
            raise ValueError(f"lowering must be one of {', '.join(LOWERINGS)}, not {lowering!r}")
        self.lowering = lowering
        graphdef, state = nnx.split(model)
        self._batch_sharding = None
        shards = 1
        if mesh is not None:
            from jax.sharding import NamedSharding, PartitionSpec

            from w2s_vqa.sharding import logical_to_spec

            spec = logical_to_spec(("batch", None, None, None, None), rules, mesh=mesh)
            batch_axes = spec[0] if isinstance(spec[0], tuple) else (spec[0],) if spec[0] else ()
            shards = math.prod(mesh.shape[a] for a in batch_axes)
            self._batch_sharding = NamedSharding(mesh, spec)
            state = jax.device_put(state, NamedSharding(mesh, PartitionSpec()))
        self._state = state
        self.dtype = jnp.dtype(dtype)
        platform = mesh.devices.flat[0].platform if mesh is not None else jax.default_backend()
        if mesh is None and platform == "cpu":
            max_batch = CPU_CHUNKS_PER_CALL
        sizes = {max_batch} | {2**i for i in range(max_batch.bit_length()) if 2**i < max_batch}
        self.batch_sizes = sorted({-(-size // shards) * shards for size in sizes})

        def forward(state, chunks):
            return nnx.merge(graphdef, state).features(normalize(chunks, self.dtype), lowering)

        self._forward = jax.jit(forward)

    def __call__(self, chunks: np.ndarray) -> np.ndarray:
        chunks = np.asarray(chunks)
        if chunks.dtype != np.uint8 or chunks.ndim != 5 or chunks.shape[-1] != 3 or 0 in chunks.shape[1:]:
            raise ValueError(f"chunks must be uint8 RGB [N, T, H, W, 3] with T, H, W >= 1, got "
                             f"{chunks.dtype} {list(chunks.shape)}")
        out = np.zeros((len(chunks), FEATURE_DIM), np.float32)
        largest = self.batch_sizes[-1]
        for start in range(0, len(chunks), largest):
            part = chunks[start:start + largest]
            size = next(s for s in self.batch_sizes if s >= len(part))
            batch = np.zeros((size, *part.shape[1:]), np.uint8)
            batch[: len(part)] = part
            batch = jax.device_put(batch, self._batch_sharding) if self._batch_sharding is not None else batch
            out[start:start + len(part)] = np.asarray(self._forward(self._state, batch))[: len(part)]
        return out
