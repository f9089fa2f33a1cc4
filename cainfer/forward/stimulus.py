"""Stimulus protocols: event times (with relative weights) and waveforms."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cainfer._files import atomic_path


def _as_1d(name: str, x: object) -> np.ndarray:
    a = np.asarray(x, dtype=float).reshape(-1) if x is not None else np.empty(0)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"stimulus {name} contains NaN or infinite values")
    return a


@dataclass(frozen=True)
class Stimulus:
    """What drives the channel influx terms.

    Parameters
    ----------
    events : array_like of float
        Event times (s), for example action potentials or electrical pulses.
        Each event adds ``influx_amplitude·weight`` µM to total cytosolic
        calcium (see :class:`~cainfer.forward.EventInflux`). Sorted on input.
    weights : array_like of float, optional
        Relative amplitude of each event (dimensionless, ≥ 0); default 1.
    waveform_time : array_like of float, optional
        Knot times (s, strictly increasing) of a piecewise-linear waveform;
        zero outside the knots. It multiplies ``waveform_amplitude`` (µM/s) in
        :class:`~cainfer.forward.WaveformInflux`, and terms read it as
        ``self.waveform`` (the IP3 concentration of :class:`~cainfer.forward.IP3R`).
    waveform : array_like of float, optional
        Waveform values at the knots (in the unit its reader expects:
        dimensionless for a waveform influx, µM of IP3 for the receptor).
    """

    events: np.ndarray = field(default_factory=lambda: np.empty(0))
    weights: np.ndarray | None = None
    waveform_time: np.ndarray = field(default_factory=lambda: np.empty(0))
    waveform: np.ndarray = field(default_factory=lambda: np.empty(0))

    def __post_init__(self) -> None:
        ev = _as_1d("events", self.events)
        w = np.ones_like(ev) if self.weights is None else _as_1d("weights", self.weights)
        if w.shape != ev.shape:
            raise ValueError(
                f"stimulus weights has {w.size} values but events has {ev.size}; they must match"
            )
        if np.any(w < 0):
            raise ValueError("stimulus weights must be ≥ 0")
        order = np.argsort(ev, kind="stable")
        wt = _as_1d("waveform_time", self.waveform_time)
        wv = _as_1d("waveform", self.waveform)
        if wt.shape != wv.shape:
            raise ValueError(
                f"stimulus waveform has {wv.size} values but waveform_time has {wt.size}"
            )
        if wt.size == 1 or (wt.size > 1 and np.any(np.diff(wt) <= 0)):
            raise ValueError("stimulus waveform_time must hold ≥ 2 strictly increasing times (s)")
        object.__setattr__(self, "events", ev[order])
        object.__setattr__(self, "weights", w[order])
        object.__setattr__(self, "waveform_time", wt)
        object.__setattr__(self, "waveform", wv)

    @property
    def event_weights(self) -> np.ndarray:
        """Relative amplitude per event (dimensionless), aligned with ``events``."""
        assert self.weights is not None
        return self.weights

    @property
    def has_events(self) -> bool:
        """Whether any event is given."""
        return self.events.size > 0

    @property
    def has_waveform(self) -> bool:
        """Whether a waveform is given."""
        return self.waveform_time.size > 0

    def check_within(self, t0: float, t1: float) -> None:
        """Raise ``ValueError`` if any event or waveform knot lies outside [t0, t1] (s)."""
        bad = self.events[(self.events < t0) | (self.events > t1)]
        if bad.size:
            raise ValueError(
                f"stimulus event at t = {bad[0]:g} s lies outside the recording "
                f"[{t0:g}, {t1:g}] s ({bad.size} such event(s))"
            )
        if self.has_waveform and (self.waveform_time[0] < t0 or self.waveform_time[-1] > t1):
            w0, w1 = self.waveform_time[0], self.waveform_time[-1]
            raise ValueError(
                f"stimulus waveform spans [{w0:g}, {w1:g}] s, "
                f"outside the recording [{t0:g}, {t1:g}] s"
            )

    @classmethod
    def train(
        cls, onsets: np.ndarray | list[float], *, n: int = 1, interval: float = 0.02
    ) -> Stimulus:
        """Events in bursts: ``n`` events ``interval`` s apart at each onset (s)."""
        if n < 1:
            raise ValueError(f"n = {n} must be ≥ 1")
        on = _as_1d("onsets", onsets)
        times = (on[:, None] + interval * np.arange(n)[None, :]).reshape(-1)
        return cls(events=times)

    def to_csv(self, path: str | os.PathLike[str]) -> None:
        """Write the stimulus as CSV (atomic): columns ``time_s,weight``, and ``waveform``.

        Without a waveform: one row per event. With one, a third column
        ``waveform``: a row with a value there is a waveform knot, a row
        without one an event.
        """
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
            wr = csv.writer(fh, lineterminator="\n")
            wr.writerow(["time_s", "weight", "waveform"] if self.has_waveform
                        else ["time_s", "weight"])  # fmt: skip
            for t, w in zip(self.events, self.event_weights, strict=True):
                wr.writerow([repr(float(t)), repr(float(w))] + ([""] if self.has_waveform else []))
            for t, v in zip(self.waveform_time, self.waveform, strict=True):
                wr.writerow([repr(float(t)), "", repr(float(v))])

    @classmethod
    def from_csv(cls, path: str | os.PathLike[str]) -> Stimulus:
        """Read a stimulus from CSV: a ``time_s`` column, optional ``weight`` and ``waveform``.

        Each row is an event at ``time_s`` (with its ``weight``, default 1),
        or, with a value in the ``waveform`` column, a knot of the waveform
        (see :meth:`to_csv`).

        Raises
        ------
        ValueError
            If the file lacks a ``time_s`` column or holds a non-numeric value;
            the message names the file and line.
        """
        path = Path(path)
        times: list[float] = []
        weights: list[float] = []
        knots: list[float] = []
        values: list[float] = []
        try:
            # utf-8-sig: a spreadsheet's byte-order mark is not part of the first column's name
            with open(path, newline="", encoding="utf-8-sig") as fh:
                rd = csv.DictReader(fh)
                names = [n.strip() for n in rd.fieldnames or []]
                if "time_s" not in names:
                    raise ValueError(
                        f"{path}: stimulus CSV needs a 'time_s' column (seconds); its header "
                        f"is {rd.fieldnames!r}"
                    )
                rd.fieldnames = names
                for line, row in enumerate(rd, start=2):
                    if not any((v or "").strip() for k, v in row.items() if k is not None):
                        continue  # a blank line
                    if None in row:
                        raise ValueError(
                            f"{path}:{line}: more values than the header's {len(names)} columns"
                        )
                    t, w, v = row.get("time_s"), row.get("weight"), row.get("waveform")
                    if t is None or not t.strip():
                        raise ValueError(f"{path}:{line}: no time_s value on this row")
                    try:
                        if v is not None and v.strip():
                            if w is not None and w.strip():
                                raise ValueError(
                                    "a row is an event (weight) or a waveform knot, not both"
                                )
                            knots.append(float(t))
                            values.append(float(v))
                            continue
                        times.append(float(t))
                        weights.append(float(w) if w is not None and w.strip() else 1.0)
                    except ValueError as e:
                        raise ValueError(f"{path}:{line}: not a number ({e})") from None
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not a UTF-8 text file ({e.reason})") from None
        except OSError as e:
            raise ValueError(f"{path}: cannot read the stimulus CSV ({e.strerror or e})") from None
        try:
            return cls(
                events=np.array(times), weights=np.array(weights),
                waveform_time=np.array(knots), waveform=np.array(values),
            )  # fmt: skip
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
