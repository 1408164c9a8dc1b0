"""Channel layouts of traced tensors, and the constraint store that solves them into groups.

Every op that creates channels (a conv's output rows, a linear's output features, an embedding's
columns) opens a *source*: a numbered run of ``size`` channels. A tensor dimension that carries
channels has a :class:`Tracked` layout, a tuple of :class:`Segment` s naming source ranges in order
(a ``cat`` concatenates layouts, a ``flatten`` multiplies ``inner``). Ops then add constraints:

- ``equal``: two source ranges are the same channels (residual add, depthwise conv) -> cut together;
- ``use``: a parameter axis holds a source range (a consumer's input columns, a BN's scale);
- ``freeze``: a range must not be cut (model input/output, unknown op, constant shape).

A tensor is sliced once, so uses of the same positions of one tensor axis (a tied weight read in two
places) make their ranges equal too (``_shared_positions``).

Attention heads are units of ``d`` consecutive channels. :meth:`ConstraintStore.coarsen` records that
a source is seen in such units (a view ``[H*d] -> [H, d]``): unit ``r`` of the coarse source is
channels ``r*d .. r*d+d-1`` of the fine one. Before cutting, ``solve`` rewrites every constraint into
the coarsest units (a member's ``inner`` is multiplied by ``d``) and freezes what does not align.

:meth:`ConstraintStore.solve` splits sources at every boundary any constraint mentions, unions the
resulting atoms, and returns one :class:`~prunekit.graph.groups.ChannelGroup` per class.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any
from dataclasses import dataclass, replace

from prunekit.graph.groups import ChannelGroup, Member, Role

__all__ = ["FIXED", "Segment", "Tracked", "ParamDim", "Dim", "ConstraintStore"]


FIXED = -1  # the source id of positions that carry no prunable channels (e.g. an input's part of a cat)


@dataclass(frozen=True)
class Segment:
    """Channels ``start .. start+length-1`` of ``source``, each spanning ``inner`` positions.

    A segment of source :data:`FIXED` stands for ``length`` positions that are never cut.
    """

    source: int
    start: int
    length: int
    inner: int = 1

    @property
    def extent(self) -> int:
        return self.length * self.inner


@dataclass(frozen=True)
class Tracked:
    """A tensor dimension that carries channels: its segments, in order along the dimension."""

    segments: tuple[Segment, ...]

    @property
    def size(self) -> int:
        return sum(s.extent for s in self.segments)

    def scaled(self, factor: int) -> Tracked:
        """The layout after merging this dim with trailing dims of ``factor`` positions (flatten)."""
        return Tracked(tuple(Segment(s.source, s.start, s.length, s.inner * factor) for s in self.segments))


@dataclass(frozen=True)
class ParamDim:
    """A dimension that is axis ``axis`` of parameter/buffer ``tensor`` (positions ``start..``);
    ``size`` is the dim's length (0 where unknown)."""

    tensor: str
    axis: int
    start: int = 0
    size: int = 0


Dim = Tracked | ParamDim | None  # None: a plain fixed-size dimension (batch, spatial, tokens, ...)


@dataclass(frozen=True)
class _Use:
    source: int
    start: int
    length: int
    tensor: str
    axis: int
    offset: int  # index in the tensor's axis of channel `start`
    inner: int
    role: Role


class ConstraintStore:
    """Collects sources and constraints while a trace is interpreted; ``solve()`` makes groups."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.names: list[str] = []
        self._equal: list[tuple[int, int, int, int, int]] = []
        self._uses: list[_Use] = []
        self._frozen: list[tuple[int, int, int, str]] = []
        self._kept_unless_mixed: list[tuple[int, int, int, str]] = []  # see scaled_by_width
        self._inexact: list[tuple[int, int, int, str]] = []
        self._zero_safe: set[int] = set()  # indices into _inexact of mixes exact on zeroed channels
        self._alias: dict[int, tuple[int, int]] = {}  # fine source -> (coarse source, factor)
        self._fixed_reads: dict[tuple[str, int], str] = {}  # (tensor, axis) -> why it must keep its size
        self._mixed_reads: dict[tuple[str, int], str] = {}  # (tensor, axis) -> why cutting it mixes the rest
        self._pieces: dict[int, tuple[int, int]] = {}  # source split in two -> (first, second) part
        self._parts: set[int] = set()  # the sources made by splitting
        self._param_axes: dict[int, tuple[ParamDim, ...]] = {}  # param source -> the parameter axes it joins
        # NOTE: asked before channels that meet a fixed-size tensor are frozen: True when the tensor is
        # a per-head bias the running layer selects its heads' rows of (see handlers.bias_heads)
        self.select: Callable[[Tracked], bool] | None = None

    # -- building ---------------------------------------------------------------------------
    def new_source(self, size: int, name: str) -> Tracked:
        """Open a run of ``size`` new channels; ``name`` identifies it (its producer tensor)."""
        self.sizes.append(size)
        self.names.append(name)
        return Tracked((Segment(len(self.sizes) - 1, 0, size),))

    def coarsen(self, source: int, factor: int) -> int | None:
        """A source whose unit ``r`` is channels ``r*factor .. r*factor+factor-1`` of ``source``.

        Used for heads (``factor`` = head_dim) and GQA query groups; None if the size does not divide.
        Coarsening twice composes (``d`` then ``n_rep`` = units of ``d*n_rep`` channels).
        """
        if factor == 1:
            return source
        if self.sizes[source] % factor or source in self._pieces:  # NOTE: a split source has units per part
            return None
        known = self._alias.get(source)
        if known is None:
            coarse = self._new(self.sizes[source] // factor, f"{self.names[source]}/{factor}")
            self._alias[source] = (coarse, factor)
            return coarse
        coarse, f = known
        if factor % f == 0:
            return self.coarsen(coarse, factor // f)
        if f % factor == 0:  # NOTE: insert a finer level: source -> mid (factor) -> coarse (f/factor)
            mid = self._new(self.sizes[source] // factor, f"{self.names[source]}/{factor}")
            self._alias[source] = (mid, factor)
            self._alias[mid] = (coarse, f // factor)
            return mid
        return None

    def section(self, layout: Tracked, start: int, length: int) -> Tracked | None:
        """Positions ``start .. start+length`` of ``layout`` as channels of their own: the sources
        there are split at the section's ends, so that each part may be seen in units of its own
        (a fused q|k|v projection sliced apart: query heads grouped for GQA, key heads single).
        Every constraint on a split source is read on its parts when solving; a section of a part
        splits it again (Mamba-2's x | B | C of the conv's share of ``in_proj``). None (nothing done)
        where the section cuts a multi-position channel or a source already seen in units (either
        side of a ``coarsen``)."""
        coarse = {c for c, _ in self._alias.values()}
        position, leaves = 0, []
        for seg in layout.segments:
            lo, hi = max(start, position), min(start + length, position + seg.extent)
            position += seg.extent
            if lo >= hi:
                continue
            if seg.source == FIXED:
                leaves.append(Segment(FIXED, 0, hi - lo))
                continue
            first = seg.start + (lo - (position - seg.extent))
            leaves_at = [self._leaf(seg.source, p)[0] for p in (first, first + hi - lo - 1)]
            if seg.inner != 1 or any(leaf in self._alias or leaf in coarse for leaf in leaves_at):
                return None  # NOTE: a source seen in units (or the units of one) keeps one unit size
            self._split_at(seg.source, first)
            self._split_at(seg.source, first + hi - lo)
            leaves += [Segment(src, a, n) for src, a, n, _ in self._resolve(seg.source, first, hi - lo)]
        return Tracked(tuple(leaves))

    def _leaf(self, source: int, position: int) -> tuple[int, int]:
        """The unsplit source holding ``position`` of ``source``, and the position there."""
        while source in self._pieces:
            first, second = self._pieces[source]
            n = self.sizes[first]
            source, position = (first, position) if position < n else (second, position - n)
        return source, position

    def _split_at(self, source: int, position: int) -> None:
        leaf, at = self._leaf(source, position) if position < self.sizes[source] else (source, 0)
        if 0 < at < self.sizes[leaf]:
            name = self.names[leaf]
            self._pieces[leaf] = (self._new(at, f"{name}[:{at}]"), self._new(self.sizes[leaf] - at, f"{name}[{at}:]"))
            self._parts.update(self._pieces[leaf])

    def _resolve(self, source: int, start: int, length: int) -> list[tuple[int, int, int, int]]:
        """A source range as ranges of unsplit sources: (source, start, length, offset in the range)."""
        if source == FIXED or source not in self._pieces:
            return [(source, start, length, 0)]
        first, second = self._pieces[source]
        n, out = self.sizes[first], []
        if start < n:
            out += self._resolve(first, start, min(length, n - start))
        if start + length > n:
            lo = max(start, n)
            out += [(s, a, m, d + lo - start) for s, a, m, d in self._resolve(second, lo - n, start + length - lo)]
        return out

    def _split_constraints(self) -> None:
        """Read every constraint on a split source on its parts (``section``)."""
        if not self._pieces:
            return
        r = self._resolve
        self._uses = [replace(u, source=s, start=a, length=n, offset=u.offset + d * u.inner)
                      for u in self._uses for s, a, n, d in r(u.source, u.start, u.length)]
        self._frozen = [(s, a, n, why) for src, st, ln, why in self._frozen for s, a, n, _ in r(src, st, ln)]
        self._kept_unless_mixed = [(s, a, n, why) for src, st, ln, why in self._kept_unless_mixed
                                   for s, a, n, _ in r(src, st, ln)]
        inexact: list[tuple[int, int, int, str]] = []
        safe: set[int] = set()
        for i, (src, st, ln, why) in enumerate(self._inexact):
            for s, a, n, _ in r(src, st, ln):
                if i in self._zero_safe:
                    safe.add(len(inexact))
                inexact.append((s, a, n, why))
        self._inexact, self._zero_safe = inexact, safe
        equal = []
        for s1, a1, s2, a2, n in self._equal:
            one, two = list(r(s1, a1, n)), list(r(s2, a2, n))
            while one and two:
                (x, xa, xn, _), (y, ya, yn, _) = one.pop(0), two.pop(0)
                m = min(xn, yn)
                equal.append((x, xa, y, ya, m))
                if xn > m:
                    one.insert(0, (x, xa + m, xn - m, 0))
                if yn > m:
                    two.insert(0, (y, ya + m, yn - m, 0))
        self._equal = equal

    def _new(self, size: int, name: str) -> int:
        self.sizes.append(size)
        self.names.append(name)
        return len(self.sizes) - 1

    def use(self, layout: Tracked, tensor: str, axis: int, role: Role, offset: int = 0) -> None:
        """Axis ``axis`` of ``tensor``, from index ``offset``, holds the channels of ``layout``."""
        position = offset
        for seg in layout.segments:
            if seg.source != FIXED:
                self._uses.append(_Use(seg.source, seg.start, seg.length, tensor, axis, position,
                                       seg.inner, role))
            position += seg.extent

    def freeze(self, layout: Tracked, reason: str) -> None:
        """Forbid cutting any channel of ``layout``."""
        self._frozen.extend((s.source, s.start, s.length, reason) for s in layout.segments if s.source != FIXED)

    def scaled_by_width(self, layout: Tracked, reason: str) -> None:
        """``layout``'s channels scale data by a number computed from their count (``x * C ** -0.5``):
        a cut changes that number. Where the cut is otherwise exact, even if only on zeroed channels
        (a contraction over them), they are kept (frozen with ``reason``); where their values change
        anyway (norm statistics over them), it is one more such change and they may be cut."""
        self._kept_unless_mixed.extend((s.source, s.start, s.length, reason) for s in layout.segments
                                       if s.source != FIXED)

    def fixed_read(self, tensor: str, axis: int, reason: str) -> None:
        """Axis ``axis`` of ``tensor`` also reads data that carries no channels (a fixed width), so
        whatever channels use that axis elsewhere must not be cut (a tensor is sliced once)."""
        self._fixed_reads.setdefault((tensor, axis), reason)

    def mixed_read(self, tensor: str, axis: int, reason: str) -> None:
        """Axis ``axis`` of ``tensor`` is normalised over where it is used (a weight-normed
        ``v``'s input columns): whatever channels use it are cut inexactly."""
        self._mixed_reads.setdefault((tensor, axis), reason)

    def inexact(self, layout: Tracked, reason: str, *, zero_safe: bool = False) -> None:
        """Mark ``layout``'s channels as mixed by an op (pruning them changes the function).

        ``zero_safe``: the op gives the pruned result when the removed channels hold zeros (a sum
        over channels, a contraction of two activations), so verification can still check values.
        """
        for s in layout.segments:
            if s.source != FIXED:
                if zero_safe:
                    self._zero_safe.add(len(self._inexact))
                self._inexact.append((s.source, s.start, s.length, reason))

    def unify(self, a: Dim, b: Dim, where: str) -> Dim:
        """Record that dims ``a`` and ``b`` hold the same positions; returns the merged layout."""
        if isinstance(a, Tracked) and isinstance(b, Tracked):
            self._equate(a, b, where)
            return a
        if isinstance(b, Tracked):
            a, b = b, a
        if isinstance(a, Tracked):
            if isinstance(b, ParamDim):
                self.use(a, b.tensor, b.axis, "passive", offset=b.start)
            elif self.select is None or not self.select(a):
                self.freeze(a, f"meets a fixed-size tensor in {where}")
            return a
        if isinstance(a, ParamDim) and isinstance(b, ParamDim) and a != b and a.size and a.size == b.size:
            return self.param_source(a, b)
        if a is None or b is None:
            # NOTE: a parameter axis meeting a plain dim (``dt + self.A.view(1, -1, 1)`` with ``dt``
            # from a frozen split) gives an activation at fixed positions, not the parameter: a
            # later matmul must not make the parameter produce channels nobody else cuts.
            return None
        return a

    def param_source(self, *dims: ParamDim) -> Tracked:
        """Parameter axes that hold the same positions before any channel reaches them
        (``addcmul(bias.view(..), weight.view(..), x)``, ``cat(cls_token, dist_token, x)``): a new
        source that every one of them uses, so all of them are sliced once it meets channels (and
        none is, if it never does: a source without a producer is not prunable)."""
        layout = self.new_source(dims[0].size, "+".join(f"{d.tensor}[{d.axis}]" for d in dims))
        for d in dims:
            self.use(layout, d.tensor, d.axis, "passive", offset=d.start)
        self._param_axes[layout.segments[0].source] = dims
        return layout

    def weight_axes(self, layout: Any) -> tuple[ParamDim, ...] | None:
        """The parameter axes behind ``layout`` when it is one whole parameter source (a weight
        computed entrywise from parameters and buffers of its shape: ``self.weight * self.mask``),
        else None."""
        if not isinstance(layout, Tracked) or len(layout.segments) != 1:
            return None
        seg = layout.segments[0]
        dims = self._param_axes.get(seg.source)
        if dims is None or seg.start != 0 or seg.length != self.sizes[seg.source] or seg.inner != 1:
            return None
        return dims

    def weight_role(self, layout: Tracked, role: Role) -> None:
        """The parameter axes behind ``layout`` (see :meth:`weight_axes`) read or write channels as a
        layer's weight does: they take ``role`` (producer, consumer) as well as being passive."""
        for d in self.weight_axes(layout) or ():
            self.use(layout, d.tensor, d.axis, role, offset=d.start)

    def _equate(self, a: Tracked, b: Tracked, where: str) -> None:
        pieces_a, pieces_b = list(a.segments), list(b.segments)
        while pieces_a and pieces_b:
            sa, sb = pieces_a.pop(0), pieces_b.pop(0)
            if sa.inner != sb.inner:
                fine, other = (sa, sb) if sa.inner < sb.inner else (sb, sa)
                grouped = self._group_units(fine, other)
                if grouped is not None:  # GQA: one key/value head spans n_rep query heads
                    (pieces_a if fine is sa else pieces_b).insert(0, grouped)
                    (pieces_b if fine is sa else pieces_a).insert(0, other)
                    continue
                self.freeze(Tracked((sa,)), f"layouts do not line up in {where}")
                self.freeze(Tracked((sb,)), f"layouts do not line up in {where}")
                continue
            n = min(sa.length, sb.length)
            if FIXED in (sa.source, sb.source):
                for seg in (sa, sb):  # channels lined up against fixed positions cannot be cut
                    self.freeze(Tracked((Segment(seg.source, seg.start, n, seg.inner),)),
                                f"meets fixed positions in {where}")
            else:
                self._equal.append((sa.source, sa.start, sb.source, sb.start, n))
            if sa.length > n:
                pieces_a.insert(0, Segment(sa.source, sa.start + n, sa.length - n, sa.inner))
            if sb.length > n:
                pieces_b.insert(0, Segment(sb.source, sb.start + n, sb.length - n, sb.inner))

    def _group_units(self, fine: Segment, coarse: Segment) -> Segment | None:
        """``fine`` seen in units of ``coarse.inner`` positions (coarsening its source), if aligned."""
        if coarse.inner % fine.inner or fine.source == FIXED:
            return None
        r = coarse.inner // fine.inner
        if fine.start % r or fine.length % r:
            return None
        source = self.coarsen(fine.source, r)
        if source is None:
            return None
        return Segment(source, fine.start // r, fine.length // r, coarse.inner)

    # -- solving ----------------------------------------------------------------------------
    def _root(self, source: int) -> tuple[int, int]:
        """The coarsest source ``source`` is aliased to, and how many of its channels make one unit."""
        factor = 1
        while source in self._alias:
            source, f = self._alias[source]
            factor *= f
        return source, factor

    def _propagate(self) -> None:
        """Equal ranges must be seen in the same units: coarsen the finer side (to a fixpoint)."""
        changed = True
        while changed:
            changed = False
            for s1, _, s2, _, _ in self._equal:
                (r1, f1), (r2, f2) = self._root(s1), self._root(s2)
                if f1 == f2 or r1 == r2:
                    continue
                fine, ratio = (r1, f2 // f1) if f1 < f2 else (r2, f1 // f2)
                if max(f1, f2) % min(f1, f2) == 0 and self.coarsen(fine, ratio) is not None:
                    changed = True

    def _in_units(self, src: int, start: int, length: int) -> tuple[int, int, int, int, bool]:
        """A fine range as (root, start, length, factor, aligned); unaligned ranges are widened."""
        root, f = self._root(src)
        lo, hi = start // f, -(-(start + length) // f)
        return root, lo, hi - lo, f, start % f == 0 and length % f == 0

    def _rewritten(self) -> tuple[list, list, list, list, list]:  # type: ignore[type-arg]
        """Every constraint in root-source units (heads); what cannot be expressed is frozen."""
        self._split_constraints()
        self._propagate()
        frozen = [(r, a, n, why) for s, st, ln, why in self._frozen for r, a, n, _, _ in [self._in_units(s, st, ln)]]
        unless_mixed = [(r, a, n, why) for s, st, ln, why in self._kept_unless_mixed
                        for r, a, n, _, _ in [self._in_units(s, st, ln)]]
        inexact = [(r, a, n, why, i in self._zero_safe) for i, (s, st, ln, why) in enumerate(self._inexact)
                   for r, a, n, _, _ in [self._in_units(s, st, ln)]]
        equal = []
        for s1, a1, s2, a2, n in self._equal:
            r1, b1, m1, f1, ok1 = self._in_units(s1, a1, n)
            r2, b2, m2, f2, ok2 = self._in_units(s2, a2, n)
            if ok1 and ok2 and f1 == f2:
                equal.append((r1, b1, r2, b2, m1))
            else:
                why = "channels grouped into heads of different sizes"
                frozen += [(r1, b1, m1, why), (r2, b2, m2, why)]
        uses = []
        for u in self._uses:
            root, start, length, f, ok = self._in_units(u.source, u.start, u.length)
            if ok:  # NOTE: most uses are in root units already; a frozen _Use is shared, not rebuilt
                same = f == 1 and (root, start, length) == (u.source, u.start, u.length)
                uses.append(u if same else replace(u, source=root, start=start, length=length, inner=u.inner * f))
            else:
                frozen.append((root, start, length, f"{u.tensor} reads part of a head"))
        shared_equal, shared_frozen = _shared_positions(uses)
        frozen += [(u.source, u.start, u.length, self._fixed_reads[(u.tensor, u.axis)]) for u in uses
                   if (u.tensor, u.axis) in self._fixed_reads]
        inexact += [(u.source, u.start, u.length, self._mixed_reads[(u.tensor, u.axis)], False) for u in uses
                    if (u.tensor, u.axis) in self._mixed_reads]
        return equal + shared_equal, uses, frozen + shared_frozen, inexact, unless_mixed

    def _cuts(self, sizes: list[int], equal: list, bounds: list) -> list[list[int]]:  # type: ignore[type-arg]
        cuts: list[set[int]] = [{0, n} for n in sizes]
        for src, start, length in bounds:
            cuts[src] |= {start, start + length}
        for s1, a1, s2, a2, n in equal:
            cuts[s1] |= {a1, a1 + n}
            cuts[s2] |= {a2, a2 + n}
        changed = True
        while changed:  # a cut inside one side of an equality is a cut on the other side too
            changed = False
            for s1, a1, s2, a2, n in equal:
                inner1 = {c - a1 for c in cuts[s1] if a1 < c < a1 + n}
                inner2 = {c - a2 for c in cuts[s2] if a2 < c < a2 + n}
                for c in inner1 - inner2:
                    cuts[s2].add(a2 + c)
                    changed = True
                for c in inner2 - inner1:
                    cuts[s1].add(a1 + c)
                    changed = True
        return [sorted(c) for c in cuts]

    def solve(self) -> tuple[ChannelGroup, ...]:
        """Split sources into atoms, union equal atoms, and build one group per class."""
        equal, uses, frozen, inexact, unless_mixed = self._rewritten()
        sizes = [0 if src in self._alias or src in self._pieces else n  # aliased or split: no atoms
                 for src, n in enumerate(self.sizes)]
        bounds = [(s, a, n) for s, a, n, *_ in frozen + inexact + unless_mixed]
        bounds += [(u.source, u.start, u.length) for u in uses]
        cuts = self._cuts(sizes, equal, bounds)
        atoms: dict[tuple[int, int], int] = {}  # (source, start) -> atom id
        spans: list[tuple[int, int, int]] = []  # atom id -> (source, start, length)
        for src, points in enumerate(cuts):
            for lo, hi in zip(points, points[1:]):
                atoms[(src, lo)] = len(spans)
                spans.append((src, lo, hi - lo))
        parent = list(range(len(spans)))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        def covered(src: int, start: int, length: int) -> list[int]:
            return [atoms[(src, p)] for p in cuts[src] if start <= p < start + length]

        for s1, a1, s2, a2, n in equal:
            for i, j in zip(covered(s1, a1, n), covered(s2, a2, n)):
                parent[find(i)] = find(j)
        return self._groups(spans, find, covered, uses, frozen, inexact, unless_mixed)

    def _groups(self, spans, find, covered, uses, frozen, inexact,  # type: ignore[no-untyped-def]
                unless_mixed) -> tuple[ChannelGroup, ...]:
        members: dict[int, set[Member]] = defaultdict(set)
        attrs: dict[int, set[Member]] = defaultdict(set)  # sizes held by module attributes
        for use in uses:
            for atom in covered(use.source, use.start, use.length):
                _, start, _ = spans[atom]
                offset = use.offset + (start - use.start) * use.inner
                holder = attrs if use.tensor.startswith("@") else members
                holder[find(atom)].add(Member(use.tensor, use.axis, offset, use.inner, use.role))
        reasons: dict[int, list[str]] = defaultdict(list)
        for src, start, length, reason in frozen:
            for atom in covered(src, start, length):
                reasons[find(atom)].append(reason)
        mixed = {find(a) for src, start, length, _, _ in inexact for a in covered(src, start, length)}
        unsafe = {find(a) for src, start, length, _, safe in inexact if not safe for a in covered(src, start, length)}
        for src, start, length, reason in unless_mixed:  # NOTE: a mix that is exact on zeroed channels
            for atom in covered(src, start, length):      # (a contraction) leaves the cut exact: kept
                if find(atom) not in unsafe:
                    reasons[find(atom)].append(reason)
        first: dict[int, int] = {}  # class root -> its first atom (groups come out in trace order)
        for atom in range(len(spans)):
            first.setdefault(find(atom), atom)
        groups = []
        taken: set[str] = set()
        for root, atom in first.items():
            src, start, length = spans[atom]
            ms = tuple(sorted(members[root], key=lambda m: (m.role != "producer", not m.tensor.endswith("weight"),
                                                            m.tensor, m.start)))
            why = list(dict.fromkeys(reasons[root]))
            if not any(m.role == "producer" for m in ms):
                why.append("no parameter produces these channels")
            producer = next((m for m in ms if m.role == "producer"), None)
            gid = f"{producer.tensor}:{producer.start}" if producer else f"{self.names[src]}:{start}"
            if gid in taken and producer is not None:  # NOTE: the same parameter produces along two axes
                gid = f"{producer.tensor}[{producer.axis}]:{producer.start}"  # (NeoMME's embedding projection)
            while gid in taken:
                gid += "'"
            taken.add(gid)
            groups.append(ChannelGroup(gid, length, ms, prunable=not why, exact=root not in mixed,
                                       reasons=tuple(dict.fromkeys(why)), attrs=tuple(sorted(attrs[root])),
                                       zero_exact=root not in unsafe))
        return tuple(groups)


def _shared_positions(uses: list[_Use]) -> tuple[list, list]:  # type: ignore[type-arg]
    """Uses that hold the same positions of one tensor axis hold the same channels (equalities).

    A tensor is sliced once, so a tied weight (an embedding read back by an LM head after its own
    dense layer) makes the channels of both places one group. Layouts that overlap but do not
    line up (other ``inner``, shifted within a unit) are frozen.
    """
    by_axis: dict[tuple[str, int], list[_Use]] = defaultdict(list)
    for u in uses:
        by_axis[(u.tensor, u.axis)].append(u)
    equal: list[tuple[int, int, int, int, int]] = []
    frozen: list[tuple[int, int, int, str]] = []
    for (tensor, axis), group in by_axis.items():
        group.sort(key=lambda u: u.offset)
        for i, a in enumerate(group):
            end = a.offset + a.length * a.inner
            for b in group[i + 1:]:
                if b.offset >= end:
                    break
                lo, hi = b.offset, min(end, b.offset + b.length * b.inner)
                if a.inner != b.inner or (lo - a.offset) % a.inner:
                    why = f"axis {axis} of {tensor} is read as two channel layouts that do not line up"
                    frozen += [(a.source, a.start, a.length, why), (b.source, b.start, b.length, why)]
                    continue
                start_a = a.start + (lo - a.offset) // a.inner
                if (a.source, start_a) != (b.source, b.start):
                    equal.append((a.source, start_a, b.source, b.start, (hi - lo) // a.inner))
    return equal, frozen
