"""The sampler's coordinates: the value space shifted and scaled to the posterior's mode.

nutpie sets its first mass matrix from the gradient at a chain's start
(``1/|∂ log p/∂x_i|``): a chain started half a local sd ``s_i`` from its mode
(a random normal ``z_i`` of them) gets ``2 s_i/|z_i|`` for a posterior
variance ``s_i²``, wrong by a factor ``~1/s_i``. A long recording pins its
resting fluorescence and noise to small sds, and the first windows of
warmup then shrink the step size until the mass matrix has adapted,
spending thousands of leapfrog steps per draw: most of a short fit's
gradients. With the chains' coordinates ``u = (x − loc)/scale``, ``loc``
the mode and ``scale`` its local sds (:func:`cainfer.infer._starts._mode_starts`),
every coordinate's sd is near 1 and the first mass matrix is within a few
of right.

The shift and scale are shared variables, identity until the mode is known;
the compiled log density takes them as data, so that setting them compiles
nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pymc as pm
import pytensor.tensor as pt
from pymc.logprob.transforms import Transform

COORD_LOC, COORD_SCALE = "coord_loc", "coord_scale"


class _Same(Transform):
    """Identity: gives a value variable a name apart from its variable's."""

    name = "coord"
    ndim_supp = 0

    def forward(self, value: Any, *inputs: Any) -> Any:
        return value

    def backward(self, value: Any, *inputs: Any) -> Any:
        return value.copy()  # a new variable: PyMC names it after the variable

    def log_jac_det(self, value: Any, *inputs: Any) -> Any:
        return pt.zeros_like(value)


class SampledModel(pm.Model):
    """A PyMC model whose value variables can be the affine ``u`` of two shared vectors.

    :meth:`use_sampled_coordinates` installs them; before that the model is
    PyMC's own. Every log density and every reported variable is then a
    function of ``u`` through ``x = loc + scale · u``; with ``loc`` 0 and
    ``scale`` 1 (their values in this process: only a compiled copy's data
    change) that is ``x`` itself.
    """

    _coordinates: dict[Any, Any] | None = None

    def use_sampled_coordinates(self) -> bool:
        """Install the coordinates; False (nothing changed) for a value of unknown shape."""
        import pytensor

        rvs = list(self.free_RVs)
        values = [self.rvs_to_values[rv] for rv in rvs]
        if any(v.dtype != "float64" or None in v.type.shape for v in values):
            return False
        sizes = [int(np.prod(v.type.shape)) for v in values]
        loc = pytensor.shared(np.zeros(sum(sizes)), name=COORD_LOC)
        scale = pytensor.shared(np.ones(sum(sizes)), name=COORD_SCALE)

        coords = {}
        a = 0
        for rv, v, n in zip(rvs, values, sizes, strict=True):
            if self.rvs_to_transforms.get(rv) is None:
                # nutpie reports an untransformed value as the variable itself: that
                # would be u; with a transform it reports the variable, from x
                self.rvs_to_transforms[rv] = _Same()
                v.name = f"{rv.name}_{_Same.name}__"
            shape = v.type.shape
            coords[v] = loc[a : a + n].reshape(shape) + scale[a : a + n].reshape(shape) * v
            a += n
        self._coordinates = coords
        return True

    def _in_sampled(self, outputs: list[Any]) -> list[Any]:
        if not self._coordinates:
            return outputs
        from pytensor.graph import clone_replace

        new = clone_replace(outputs, self._coordinates)
        for n, o in zip(new, outputs, strict=True):
            n.name = o.name
        return list(new)

    def logp(self, *args: Any, **kwargs: Any) -> Any:
        """PyMC's log density, of the sampled coordinates when installed."""
        out = super().logp(*args, **kwargs)
        if isinstance(out, list):
            return self._in_sampled(out)
        return self._in_sampled([out])[0]

    @property
    def unobserved_value_vars(self) -> list[Any]:
        """PyMC's reported variables, of the sampled coordinates when installed."""
        return self._in_sampled(list(super().unobserved_value_vars))
