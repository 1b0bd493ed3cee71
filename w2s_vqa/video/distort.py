"""Synthetic distortion simulators: versions of a video whose quality order is known.

Each :class:`Simulator` degrades uint8 RGB frames ``[T, H, W, 3]`` at one of
its severity levels (1 = mildest) and returns frames of the same shape. The
pair builder turns two levels of one source video into a preference label
(docs/method.md, "Labels"), so what matters is that a higher level is reliably
worse. Level values follow docs/method.md ("Synthetic distortion simulators");
those of blur, noise, darken and brighten are KADID-10k's. Where a value
needs interpreting, or the paper gives none, the choice is documented on
the simulator below.

Randomness comes only from ``seed``, and every level of one seed draws the
same random numbers: noise fields are scaled, jitter offsets are scaled, and
stutter drop sets are nested. Levels of one seed therefore differ in
strength alone, never in luck, which keeps their order dependable.

Spatial work runs one frame at a time, so memory stays at one float frame
whatever the clip length; brightness curves are 256-entry lookup tables.

Registry: ``SIMULATORS[name]`` or :func:`get`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from PIL import Image
from scipy import ndimage

from w2s_vqa.video.encode import encode_decode
from w2s_vqa.video.frames import check_frames, resize_frames

KINDS = ("spatial", "temporal", "compression")

# Transform signature: (frames, level value, fps, rng) -> frames.
Transform = Callable[[np.ndarray, float, float, np.random.Generator], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Simulator:
    """A named distortion with its per-level parameter values (level 1 = mildest)."""

    name: str
    kind: str
    levels: tuple
    transform: Transform = dataclasses.field(repr=False, compare=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind must be one of {KINDS}, got {self.kind!r}")

    def apply(self, frames: np.ndarray, level: int, *, fps: float = 30.0, seed: int = 0) -> np.ndarray:
        """Distort uint8 RGB ``[T, H, W, 3]`` frames at 1-based ``level``; deterministic for a given seed.

        Returns frames of the same shape, frame ``i`` taking the place of input
        frame ``i``: a simulator changes what each frame shows, never when, so
        the caller samples the result at the source's timestamps (the frame
        times ``w2s_vqa.video.decode.decode_frames`` returns). ``fps`` is the clip's nominal
        frame rate, which only the encoders' rate control uses. Raises
        ValueError for a level out of range or frames that are not uint8 RGB.
        """
        if not 1 <= level <= len(self.levels):
            raise ValueError(f"{self.name}: level must be 1..{len(self.levels)}, got {level}")
        check_frames(frames)
        out = self.transform(frames, self.levels[level - 1], fps, np.random.default_rng(seed))
        if out.shape != frames.shape:  # the frames' timestamps would no longer fit them
            raise RuntimeError(f"{self.name}: returned frames of shape {out.shape} for {frames.shape}")
        return out


def _per_frame(frames: np.ndarray, distort: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply a float32 [H, W, 3] -> float32 function on the 0..255 scale to each frame; round and clip."""
    out = np.empty_like(frames)
    for index, frame in enumerate(frames):
        out[index] = np.clip(np.rint(distort(frame.astype(np.float32))), 0, 255)
    return out


# --- spatial ------------------------------------------------------------------


def _resize(frames: np.ndarray, factor: float, fps: float, rng: np.random.Generator) -> np.ndarray:
    """Shrink by ``factor`` and enlarge back, both with w2s_vqa.video.frames' bicubic filter."""
    height, width = frames.shape[1:3]
    small = (max(1, round(height / factor)), max(1, round(width / factor)))
    return resize_frames(resize_frames(frames, small), (height, width))


def _blur(frames: np.ndarray, sigma: float, fps: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur of standard deviation ``sigma`` pixels, within each frame.

    Borders repeat the edge pixel. At sigma 0.1 the kernel truncates to a
    single tap, so level 1 leaves frames untouched; the value is kept as
    docs/method.md gives it.
    """
    return _per_frame(frames, lambda frame: ndimage.gaussian_filter(frame, sigma=(sigma, sigma, 0), mode="nearest"))


def _noise(frames: np.ndarray, variance: float, fps: float, rng: np.random.Generator) -> np.ndarray:
    """Additive white Gaussian noise of ``variance`` on [0, 1] pixels, independent per pixel and channel.

    docs/method.md's "sigma" values are KADID-10k's white-noise levels, which are
    variances: the public Python port of KADID's code (ARNIQA's
    ``white_noise``) draws ``randn * sqrt(v)``. Read as standard deviations
    they would be at most 2.6 grey levels, mostly rounded away in uint8; as
    variances the standard deviation runs from 8 to 26 grey levels, five
    visibly distinct steps.
    """
    std = np.sqrt(variance) * 255.0
    return _per_frame(
        frames, lambda frame: frame + std * rng.standard_normal(frame.shape, dtype=np.float32)
    )


def _brightness_table(amount: float) -> np.ndarray:
    """KADID-10k's tone curve as a uint8 lookup table; ``amount > 0`` brightens, ``< 0`` darkens.

    KADID's ``curves`` fits MATLAB's spline through (0, 0), (0.5, 0.5 + a/2),
    (1, 1); through three points that spline is the parabola
    ``y = x + 2a x (1 - x)``, clipped to [0, 1]. For every pixel value the
    change grows with ``|a|`` until it saturates, so severity is monotonic.
    (KADID's brighten also averages in the same curve applied to CIELAB
    lightness, which mainly keeps saturation; we use the RGB curve alone.)
    """
    x = np.arange(256) / 255.0
    y = np.clip(x + 2.0 * amount * x * (1.0 - x), 0.0, 1.0)
    return np.rint(y * 255.0).astype(np.uint8)


def _darken(frames: np.ndarray, amount: float, fps: float, rng: np.random.Generator) -> np.ndarray:
    return _brightness_table(-amount)[frames]


def _brighten(frames: np.ndarray, amount: float, fps: float, rng: np.random.Generator) -> np.ndarray:
    return _brightness_table(amount)[frames]


# --- temporal -----------------------------------------------------------------


def _jitter(frames: np.ndarray, fraction: float, fps: float, rng: np.random.Generator) -> np.ndarray:
    """Camera shake: shift each frame by a random sub-pixel offset, crop the borders, resize back.

    Offsets are uniform in ``±fraction`` of the width (x) and height (y),
    drawn per frame. The crop removes that maximal margin on every side, so
    no frame shows an empty border, and the crop is resized back to the
    full frame: shift, crop and resize are one bicubic resampling of a
    shifted box (PIL's ``box``). Levels 1 %, 2 %, 4 % of the frame size,
    doubling like the spatial levels: at 1080p a shake of up to 19, 38 and
    77 pixels between frames.
    """
    height, width = frames.shape[1:3]
    margin = np.array([fraction * width, fraction * height])
    offsets = rng.uniform(-1.0, 1.0, size=(len(frames), 2)) * margin
    out = np.empty_like(frames)
    for index, (frame, (dx, dy)) in enumerate(zip(frames, offsets)):
        box = (margin[0] + dx, margin[1] + dy, width - margin[0] + dx, height - margin[1] + dy)
        out[index] = np.asarray(Image.fromarray(frame).resize((width, height), Image.Resampling.BICUBIC, box=box))
    return out


def _stutter(frames: np.ndarray, probability: float, fps: float, rng: np.random.Generator) -> np.ndarray:
    """Drop each frame with ``probability`` and show the previous frame instead.

    A dropped frame's place, and so its presentation time, keeps the frame kept
    before it: stutter changes content, not the clock. A run of drops freezes
    on the last frame kept; the first frame is never dropped. Levels 0.1, 0.3,
    0.5: at 30 fps about 3, 9 and 15 frozen frames a second, from an
    occasional hitch to playback at half its frame rate.
    One uniform draw per frame, compared with ``probability``, makes the
    drop sets of one seed nested across levels.
    """
    kept = rng.random(len(frames)) >= probability
    kept[0] = True
    shown = np.maximum.accumulate(np.where(kept, np.arange(len(frames)), 0))
    return frames[shown]


# --- compression --------------------------------------------------------------


def _h264(frames: np.ndarray, crf: float, fps: float, rng: np.random.Generator) -> np.ndarray:
    """libx264, preset "fast", constant rate factor ``crf``.

    docs/method.md's last level, CRF 63, is outside 8-bit x264's range (0-51):
    x264 silently clamps it to 51 (checked: CRF 63 and 51 give byte-identical
    streams), so the authors' level 4 was in effect CRF 51, and that is the
    value stored here. One encoder thread: x264's threaded rate control made the
    output differ between runs under CPU load, and `prepare` runs one worker
    per core anyway.
    """
    return encode_decode(frames, fps, codec="libx264", options={"preset": "fast", "crf": crf, "threads": "1"})


def _h265(frames: np.ndarray, crf: float, fps: float, rng: np.random.Generator) -> np.ndarray:
    """libx265, preset "veryslow", constant rate factor ``crf``; x265's console log is
    silenced. One thread (a single pool thread, no frame threads), as for x264:
    outputs must not depend on the machine's load."""
    return encode_decode(
        frames, fps, codec="libx265",
        options={"preset": "veryslow", "crf": crf, "x265-params": "log-level=none:pools=1:frame-threads=1"},
    )


SIMULATORS: dict[str, Simulator] = {
    simulator.name: simulator
    for simulator in (
        Simulator("resize", "spatial", (2, 3, 4, 8, 16), _resize),
        Simulator("blur", "spatial", (0.1, 0.5, 1.0, 2.0, 5.0), _blur),
        Simulator("noise", "spatial", (0.001, 0.002, 0.003, 0.005, 0.01), _noise),
        Simulator("darken", "spatial", (0.05, 0.1, 0.2, 0.4, 0.8), _darken),
        Simulator("brighten", "spatial", (0.1, 0.2, 0.4, 0.7, 1.1), _brighten),
        Simulator("jitter", "temporal", (0.01, 0.02, 0.04), _jitter),
        Simulator("stutter", "temporal", (0.1, 0.3, 0.5), _stutter),
        Simulator("h264", "compression", (24, 36, 48, 51), _h264),
        Simulator("h265", "compression", (36, 40, 44, 48), _h265),
    )
}


def get(name: str) -> Simulator:
    """The simulator called ``name``; KeyError listing the known names otherwise."""
    try:
        return SIMULATORS[name]
    except KeyError:
        raise KeyError(f"unknown distortion simulator {name!r}; known: {', '.join(SIMULATORS)}") from None
