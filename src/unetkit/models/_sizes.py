"""Legal input sizes of a U-Net, axis by axis: what the overlap-tile strategy needs (Ronneberger et al. 2015,
Fig. 2; Çiçek et al. 2016, Sec. 2). An unpadded U-Net trims every block's convs and needs every pooled size to
be divisible by its pooling stride; with anisotropic pooling (nnU-Net's plans: `(1, 2, 2)` for thick slices)
and per-axis kernels, each axis has its own rule, so every method takes an `axis`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["AxisPlan", "SizeRulesMixin"]

_AXIS_NAMES = {2: ("height", "width"), 3: ("depth", "height", "width")}


@dataclass(frozen=True)
class AxisPlan:
    """How one spatial axis changes through a U-Net.

    Attributes:
        shrinks: per level (shallowest first, `depth + 1` entries), the pixels the level's conv block trims
            from the axis (both sides together); the decoder block of a level trims as much as its encoder block.
        pools: per down-sampling (`depth` entries), the pooling stride on this axis (1 = not pooled).
        padded: padded convs and internal padding: every size is legal and comes back unchanged.
    """

    shrinks: tuple[int, ...]
    pools: tuple[int, ...]
    padded: bool

    @property
    def factor(self) -> int:
        """The product of the pooling strides: a padded model pads this axis to a multiple of it."""
        product = 1
        for p in self.pools:
            product *= p
        return product

    def output_size(self, n: int) -> int | None:
        """The output side for input side `n`, or `None` if `n` is not legal on this axis."""
        if n < 1:
            return None
        if self.padded:
            return n
        size = n
        for shrink, pool in zip(self.shrinks, self.pools, strict=False):  # contracting path
            size -= shrink
            if size < pool or size % pool:  # every pooled size must divide exactly
                return None
            size //= pool
        size -= self.shrinks[-1]  # bottleneck
        for shrink, pool in zip(reversed(self.shrinks[:-1]), reversed(self.pools), strict=True):  # expanding path
            if size < 1:
                return None
            size = pool * size - shrink
        return size if size >= 1 else None

    def valid_input_size(self, n: int) -> int:
        """The smallest legal input side >= `n`."""
        size = max(int(n), 1)
        while self.output_size(size) is None:
            size += 1
        return size

    def margin(self) -> int:
        """Context lost on each side: `(n - output_size(n)) / 2` for legal `n` (0 for padded models)."""
        n = self.valid_input_size(1)
        out = self.output_size(n)
        assert out is not None  # valid_input_size returns a legal size
        return (n - out) // 2


class SizeRulesMixin:
    """`output_size`, `valid_input_size` and `context_margin` per axis, for a model with `axis_plans`."""

    axis_plans: tuple[AxisPlan, ...]

    def _plan(self, axis: int | None) -> AxisPlan:
        plans = self.axis_plans
        if axis is None:
            if len(set(plans)) > 1:
                raise ValueError(
                    "this model's spatial axes follow different rules (anisotropic kernels or pooling): "
                    "pass `axis` or use the per-axis methods (`output_shape`, `valid_input_shape`, `context_margins`)"
                )
            return plans[0]
        if isinstance(axis, bool) or not isinstance(axis, int) or not -len(plans) <= axis < len(plans):
            raise ValueError(f"`axis` must be a spatial axis in [{-len(plans)}, {len(plans) - 1}], got {axis!r}")
        return plans[axis]

    def output_size(self, n: int, axis: int | None = None) -> int | None:
        """Output side for an input side `n` (on spatial `axis`, 0 = first), or `None` if `n` is not legal."""
        return self._plan(axis).output_size(n)

    def valid_input_size(self, n: int, axis: int | None = None) -> int:
        """The smallest legal input side >= `n` (on spatial `axis`); any `n >= 1` for padded models."""
        return self._plan(axis).valid_input_size(n)

    def context_margin(self, axis: int | None = None) -> int:
        """Pixels of context lost on each side (on spatial `axis`); 0 for padded models."""
        return self._plan(axis).margin()

    def output_shape(self, shape: Sequence[int]) -> tuple[int, ...] | None:
        """The output's spatial shape for an input of spatial `shape`, or `None` if an axis is not legal."""
        sizes = self._check_rank(shape)
        out = [plan.output_size(n) for plan, n in zip(self.axis_plans, sizes, strict=True)]
        return None if any(o is None for o in out) else tuple(o for o in out if o is not None)

    def valid_input_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The smallest legal spatial shape >= `shape`, axis by axis."""
        sizes = self._check_rank(shape)
        return tuple(plan.valid_input_size(n) for plan, n in zip(self.axis_plans, sizes, strict=True))

    def context_margins(self) -> tuple[int, ...]:
        """Context lost on each side, per spatial axis."""
        return tuple(plan.margin() for plan in self.axis_plans)

    def _check_rank(self, shape: Sequence[int]) -> tuple[int, ...]:
        sizes = tuple(int(n) for n in shape)
        if len(sizes) != len(self.axis_plans):
            raise ValueError(f"`shape` must give {len(self.axis_plans)} spatial sizes, got {tuple(shape)}")
        return sizes

    def _check_size(self, sizes: Sequence[int]) -> None:
        """Raise a `ValueError` naming the axis and the nearest legal sizes if an input side is not legal."""
        names = _AXIS_NAMES.get(len(sizes), tuple(f"axis {i}" for i in range(len(sizes))))
        for side, n, plan in zip(names, sizes, self.axis_plans, strict=True):
            if plan.output_size(n) is None:
                above = plan.valid_input_size(n)
                below = next((m for m in range(n - 1, 0, -1) if plan.output_size(m) is not None), None)
                near = [m for m in (below, above) if m is not None]
                legal = " and ".join(f"{m} (output {plan.output_size(m)})" for m in near)
                raise ValueError(
                    f"input {side} {n} is not legal for this unpadded U-Net (every pooled size must divide by its "
                    f"pooling stride); nearest legal input sizes: {legal}"
                )
