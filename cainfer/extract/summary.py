"""Summary images accumulated over a streamed movie: mean and local correlation."""

from __future__ import annotations

import numpy as np

# neighbour offsets (dy, dx) covering each unordered pair of 8-neighbours once
_PAIRS = ((0, 1), (1, 0), (1, 1), (1, -1))


class SummaryAccumulator:
    """Running sums from which the mean and local-correlation images follow.

    Feed frames chunk by chunk with :meth:`add`; memory is a few images,
    whatever the number of frames. The local correlation of a pixel is the
    mean Pearson correlation of its time course with its 8 neighbours.

    Parameters
    ----------
    shape : (int, int)
        Frame shape (pixels).
    correlation : bool
        Accumulate what the correlation image needs (else the mean only).
    """

    def __init__(self, shape: tuple[int, int], *, correlation: bool = True) -> None:
        self.shape = shape
        self.correlation = correlation
        self.n = 0
        self.s1 = np.zeros(shape)
        self.s2 = np.zeros(shape)
        self.cross = [np.zeros(shape) for _ in _PAIRS]
        self._shift: np.ndarray | None = None

    def add(self, frames: np.ndarray) -> None:
        """Add frames ``(n, y, x)``."""
        x = np.asarray(frames, dtype=np.float64)
        if self._shift is None:  # centre on the first frames for numerical accuracy
            self._shift = x.mean(axis=0)
        x = x - self._shift
        self.n += len(x)
        self.s1 += x.sum(axis=0)
        if not self.correlation:
            return
        self.s2 += np.einsum("tyx,tyx->yx", x, x)
        for acc, (dy, dx) in zip(self.cross, _PAIRS, strict=True):
            a, b = _overlap(x, dy, dx)
            acc[_region(self.shape, dy, dx)] += np.einsum("tyx,tyx->yx", a, b)

    def mean_image(self) -> np.ndarray:
        """Mean over frames."""
        assert self._shift is not None
        return self.s1 / self.n + self._shift

    def correlation_image(self) -> np.ndarray:
        """Mean correlation of each pixel with its 8 neighbours (dimensionless)."""
        if not self.correlation:
            raise ValueError("this accumulator was made with correlation=False")
        n = self.n
        mean = self.s1 / n
        var = np.maximum(self.s2 / n - mean**2, 1e-12)
        total = np.zeros(self.shape)
        count = np.zeros(self.shape)
        for acc, (dy, dx) in zip(self.cross, _PAIRS, strict=True):
            reg_a = _region(self.shape, dy, dx)
            reg_b = _region(self.shape, -dy, -dx)
            cov = acc[reg_a] / n - mean[reg_a] * mean[reg_b]
            r = cov / np.sqrt(var[reg_a] * var[reg_b])
            total[reg_a] += r
            total[reg_b] += r
            count[reg_a] += 1
            count[reg_b] += 1
        return total / count


def _region(shape: tuple[int, int], dy: int, dx: int) -> tuple[slice, slice]:
    """Pixels p for which p + (dy, dx) is inside the frame."""
    h, w = shape
    ys = slice(0, h - dy) if dy >= 0 else slice(-dy, h)
    xs = slice(0, w - dx) if dx >= 0 else slice(-dx, w)
    return ys, xs


def _overlap(x: np.ndarray, dy: int, dx: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = _region(x.shape[1:], dy, dx)
    ys2, xs2 = _region(x.shape[1:], -dy, -dx)
    return x[:, ys, xs], x[:, ys2, xs2]


class MeanAccumulator:
    """Mean image of frames, optionally as registered, without shifting whole frames.

    A frame registered by bilinear interpolation is a weighted sum of the raw
    frame at four integer offsets; summing the raw frames per offset and
    shifting each sum once at the end gives exactly the mean of the
    registered frames (edges extended as by ``mode="nearest"``).
    """

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = shape
        self.n = 0
        self._sums: dict[tuple[int, int], np.ndarray] = {}

    def _acc(self, key: tuple[int, int]) -> np.ndarray:
        if key not in self._sums:
            self._sums[key] = np.zeros(self.shape)
        return self._sums[key]

    def add(self, frames: np.ndarray, displacements: np.ndarray | None = None) -> None:
        """Add frames ``(n, y, x)``, registered by ``displacements`` ``(n, 2)`` if given."""
        self.n += len(frames)
        if displacements is None:
            self._acc((0, 0))[...] += frames.sum(axis=0, dtype=np.float64)
            return
        base = np.floor(displacements).astype(np.int64)
        frac = displacements - base
        for f, (iy, ix), (fy, fx) in zip(frames, base.tolist(), frac.tolist(), strict=True):
            for cy, wy in ((0, 1.0 - fy), (1, fy)):
                for cx, wx in ((0, 1.0 - fx), (1, fx)):
                    w = wy * wx
                    if w > 0.0:
                        self._acc((iy + cy, ix + cx))[...] += w * f

    def mean(self) -> np.ndarray:
        """The mean image."""
        h, w = self.shape
        out = np.zeros(self.shape)
        yy, xx = np.arange(h), np.arange(w)
        for (oy, ox), s in self._sums.items():
            out += s[np.clip(yy + oy, 0, h - 1)][:, np.clip(xx + ox, 0, w - 1)]
        return out / max(self.n, 1)
