"""Inference: PyMC models of cell models (forward, pymc, pytensor, arviz)."""

from cainfer.infer._op import SolveOp, SolveVJPOp, solve_op

__all__ = ["SolveOp", "SolveVJPOp", "solve_op"]
