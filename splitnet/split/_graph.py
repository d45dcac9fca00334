"""The split engine: capture a model's graph, enumerate its split points, cut it.

The graph is captured with ``torch.export`` and functionalised
(``run_decompositions({})``), so every node is one ATen operation with no
in-place mutation and no dead code; liveness on that graph is exact. A split
point is the cut just after one operation; the tensors that cross it are the
values produced at or before the point and consumed after it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import keyword
import logging
import operator
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.utils._pytree as pytree
from torch import fx, nn

from splitnet._errors import SplitnetError
from splitnet.split._kinds import KINDS, op_kind, op_short_name

__all__ = ["CrossingTensor", "SplitError", "SplitGraph", "SplitPoint", "trace"]

# ATen nodes that only check things and produce no value; they are dropped.
_ASSERTS = {
    "_assert_tensor_metadata",
    "_assert_scalar",
    "sym_constrain_range",
    "sym_constrain_range_for_size",
    "_assert_async",
}


class SplitError(SplitnetError):
    """A model that cannot be traced, or a split point that does not exist."""


@dataclass(frozen=True)
class CrossingTensor:
    """One tensor that crosses a cut.

    Attributes:
        name: the split point that produced it (``"input"`` for the model input).
        shape: its shape, batch dimension included.
        dtype: its dtype as a string (``"float32"``).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class SplitPoint:
    """The cut just after one operation of the graph.

    Attributes:
        index: position in execution order (0 is the first operation).
        name: stable name from the module path, e.g. ``encoder.block3.pool``.
        kind: coarse operation class (``conv``, ``pool``, ``relu``, ``add``,
            ``concat``, ``upsample``, ``linear``, ...; see ``KINDS``).
        op: the ATen operation, e.g. ``max_pool2d``.
        module: path of the innermost module that ran it (``""``: the model's own forward).
        node: name of the node in :attr:`SplitGraph.graph_module`.
        shape: shape of the operation's (first) output.
        tensors: every tensor that crosses the cut, in production order.
    """

    index: int
    name: str
    kind: str
    op: str
    module: str
    node: str
    shape: tuple[int, ...]
    tensors: tuple[CrossingTensor, ...]

    @property
    def elements(self) -> int:
        """Elements crossing the cut (all tensors, batch included)."""
        return sum(t.elements for t in self.tensors)

    def nbytes(self, bits: float = 32) -> float:
        """Bytes crossing the cut at ``bits`` per element."""
        return self.elements * bits / 8


def _identifier(name: str, used: set[str]) -> str:
    """A unique Python identifier for a tail argument (``layer1.0.add`` -> ``layer1_0_add``)."""
    ident = re.sub(r"\W", "_", name)
    if not ident or ident[0].isdigit() or keyword.iskeyword(ident):
        ident = f"t_{ident}"
    base, k = ident, 1
    while ident in used:
        ident, k = f"{base}_{k}", k + 1
    used.add(ident)
    return ident


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _tensor_meta(node: fx.Node) -> torch.Tensor | None:
    val = node.meta.get("val")
    return val if isinstance(val, torch.Tensor) else None


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _check_input(model: nn.Module, inputs: tuple[torch.Tensor, ...], name: str) -> None:
    """Model-declared input constraints, checked before tracing for a clear message."""
    x = inputs[0]
    info = getattr(model, "splitnet_info", None)
    if info is not None and x.dim() == 4:
        h, w = x.shape[-2:]
        m, lo = info.input_multiple, info.min_size
        if h % m or w % m or h < lo or w < lo:
            raise SplitError(
                f"{name} cannot take input {'x'.join(map(str, x.shape[1:]))}: height and width "
                f"must be multiples of {m} and at least {lo}"
            )
    check = getattr(model, "check_input_shape", None)  # segmentation-models-pytorch
    if callable(check):
        try:
            check(x)
        except RuntimeError as e:
            raise SplitError(
                f"{name} cannot take input {tuple(x.shape)}: {_first_line(e)}"
            ) from None


@contextlib.contextmanager
def _quiet_fake_tensor_logs():
    """A model that cannot take an input makes torch log a traceback before raising;
    the error we raise says it in one line."""
    logger = logging.getLogger("torch._subclasses.fake_tensor")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def trace(
    model: nn.Module,
    example_input: torch.Tensor | tuple[torch.Tensor, ...],
    *,
    name: str | None = None,
) -> SplitGraph:
    """Captures ``model``'s graph in eval mode and enumerates its split points.

    Args:
        model: any ``nn.Module`` that ``torch.export`` can capture. It is traced
            in eval mode (its mode is restored afterwards): splits are for inference.
        example_input: a tensor (or tuple of tensors) of the shape the split
            modules will take; shapes in the graph are static.
        name: a name for messages (default: ``model.splitnet_name`` or the class name).

    Returns:
        A :class:`SplitGraph`.

    Raises:
        SplitError: the model cannot take this input or cannot be captured.

    Example:
        >>> g = trace(create_model("unet-vgg16"), torch.randn(1, 3, 64, 64))
        >>> [p.name for p in g.select(kind="pool")][:2]
        ['encoder.block1.pool', 'encoder.block2.pool']
    """
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    if not inputs or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise SplitError("example_input must be a tensor or a tuple of tensors")
    name = name or getattr(model, "splitnet_name", None) or type(model).__name__
    _check_input(model, inputs, name)
    was_training = model.training
    model.eval()
    try:
        with _quiet_fake_tensor_logs():
            program = torch.export.export(model, inputs).run_decompositions({})
    except Exception as e:
        shape = "x".join(map(str, inputs[0].shape[1:] if inputs[0].dim() == 4 else inputs[0].shape))
        raise SplitError(f"cannot trace {name} with input {shape}: {_first_line(e)}") from None
    finally:
        model.train(was_training)
    return SplitGraph(
        model, program.module(), name=name, input_shapes=[tuple(t.shape) for t in inputs]
    )


class SplitGraph:
    """A captured model and its split points.

    Use :func:`trace` to make one. ``points`` lists every candidate cut in
    execution order; ``split`` returns the head and tail modules of one.
    """

    def __init__(
        self,
        model: nn.Module,
        graph_module: fx.GraphModule,
        *,
        name: str,
        input_shapes: Sequence[tuple[int, ...]],
    ) -> None:
        self.name = name
        self.input_shapes = [tuple(s) for s in input_shapes]
        self.graph_module = graph_module
        self._drop_checks()
        self._out_spec = graph_module._out_spec
        self._ops: list[fx.Node] = [
            n
            for n in graph_module.graph.nodes
            if n.op == "call_function" and n.target is not operator.getitem
        ]
        self._pos = self._positions()
        self._last_use = self._last_uses()
        self.points: tuple[SplitPoint, ...] = self._enumerate(model)
        self._by_name = {p.name: p for p in self.points}

    # -- construction -------------------------------------------------------------------------

    def _drop_checks(self) -> None:
        """Removes the shape guards and assertion nodes that ``torch.export`` leaves."""
        gm = self.graph_module
        for node in reversed(list(gm.graph.nodes)):
            is_guard = node.op == "call_module" and str(node.target).startswith("_guards")
            is_assert = node.op == "call_function" and op_short_name(node.target) in _ASSERTS
            if (is_guard or is_assert) and not node.users:
                gm.graph.erase_node(node)
        for name, _ in list(gm.named_children()):
            if name.startswith("_guards"):
                delattr(gm, name)
        others = [
            n
            for n in gm.graph.nodes
            if n.op not in ("placeholder", "get_attr", "call_function", "output")
        ]
        if others:
            raise SplitError(f"cannot split {self.name}: unexpected graph nodes {others[:3]}")
        gm.recompile()

    def _positions(self) -> dict[fx.Node, int]:
        pos: dict[fx.Node, int] = {}
        for n in self.graph_module.graph.nodes:
            if n.op == "placeholder":
                pos[n] = -1
        for i, n in enumerate(self._ops):
            pos[n] = i
            for u in n.users:
                if u.target is operator.getitem:
                    pos[u] = i
        return pos

    def _values(self) -> list[fx.Node]:
        """Nodes that hold an activation tensor (inputs, op outputs, getitems), in graph order."""
        return [
            n
            for n in self.graph_module.graph.nodes
            if n in self._pos and _tensor_meta(n) is not None
        ]

    def _last_uses(self) -> dict[fx.Node, int]:
        end = len(self._ops)  # the output node comes after every operation
        last: dict[fx.Node, int] = {}
        for v in self._values():
            last[v] = max((self._pos.get(u, end) for u in v.users), default=self._pos[v])
        return last

    def crossing_nodes(self, index: int) -> list[fx.Node]:
        """The value nodes that cross the cut after operation ``index``, in production order."""
        return [v for v, last in self._last_use.items() if self._pos[v] <= index < last]

    def _enumerate(self, model: nn.Module) -> tuple[SplitPoint, ...]:
        names = self._point_names(model)
        value_names = self._value_names(names)
        # one sweep over lifetimes gives every point's crossing set, in graph (= production) order
        crossing: list[list[fx.Node]] = [[] for _ in self._ops]
        for v, last in self._last_use.items():
            for i in range(max(self._pos[v], 0), last):
                crossing[i].append(v)
        points = []
        for i, node in enumerate(self._ops):
            tensors = tuple(
                CrossingTensor(
                    value_names[v], tuple(_tensor_meta(v).shape), _dtype_name(_tensor_meta(v).dtype)
                )
                for v in crossing[i]
            )
            out = _tensor_meta(node)
            if out is None:
                out = next(
                    (_tensor_meta(u) for u in node.users if _tensor_meta(u) is not None), None
                )
            points.append(
                SplitPoint(
                    index=i,
                    name=names[node],
                    kind=op_kind(node.target),
                    op=op_short_name(node.target),
                    module=self._module_of(node)[0],
                    node=node.name,
                    shape=tuple(out.shape) if out is not None else (),
                    tensors=tensors,
                )
            )
        return tuple(points)

    @staticmethod
    def _module_of(node: fx.Node) -> tuple[str, str]:
        """(module path, call key) of the innermost module that ran ``node``."""
        stack = node.meta.get("nn_module_stack") or {}
        if not stack:
            return "", ""
        key, (path, _) = next(reversed(stack.items()))
        return path, key

    def _point_names(self, model: nn.Module) -> dict[fx.Node, str]:
        """Names from module paths: a leaf module's single op takes the module's path,
        other ops add their own name (``layer1.0.add``); repeats get ``_1``, ``_2``."""
        calls = Counter(self._module_of(n)[1] for n in self._ops)
        seen: Counter[str] = Counter()
        names: dict[fx.Node, str] = {}
        for n in self._ops:
            path, key = self._module_of(n)
            try:
                leaf = bool(path) and not any(True for _ in model.get_submodule(path).children())
            except AttributeError:
                leaf = False
            if leaf and calls[key] == 1:
                base = path
            else:
                base = (
                    f"{path}.{op_short_name(n.target, friendly=True)}"
                    if path
                    else op_short_name(n.target, friendly=True)
                )
            names[n] = base if seen[base] == 0 else f"{base}_{seen[base]}"
            seen[base] += 1
        return names

    def _value_names(self, point_names: dict[fx.Node, str]) -> dict[fx.Node, str]:
        placeholders = [n for n in self.graph_module.graph.nodes if n.op == "placeholder"]
        names: dict[fx.Node, str] = {}
        for v in self._last_use:
            if v.op == "placeholder":
                names[v] = "input" if len(placeholders) == 1 else v.name
            elif v.target is operator.getitem:
                producer, idx = v.args
                tensor_outputs = [u for u in producer.users if u.target is operator.getitem]
                base = point_names[producer]
                names[v] = base if len(tensor_outputs) == 1 or idx == 0 else f"{base}[{idx}]"
            else:
                names[v] = point_names[v]
        return names

    # -- queries ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.points)

    def __iter__(self):
        return iter(self.points)

    def __repr__(self) -> str:
        return f"SplitGraph({self.name!r}, input={self.input_shapes}, points={len(self.points)})"

    def point(self, key: int | str | SplitPoint) -> SplitPoint:
        """A point by index (negative counts from the end), name, or the point itself."""
        if isinstance(key, SplitPoint):
            if key.index < len(self.points) and self.points[key.index] == key:
                return key
            raise SplitError(
                f"split point {key.name!r} does not belong to this graph ({self.name})"
            )
        if isinstance(key, bool) or not isinstance(key, (int, str)):
            raise SplitError(
                f"a split point is an index, a name or a SplitPoint, got {type(key).__name__}"
            )
        if isinstance(key, int):
            n = len(self.points)
            if not -n <= key < n:
                raise SplitError(
                    f"split point index {key} out of range: {self.name} has points 0..{n - 1}"
                )
            return self.points[key]
        point = self._by_name.get(key)
        if point is None:
            import difflib

            close = difflib.get_close_matches(key, list(self._by_name), n=3, cutoff=0.5)
            hint = (
                f"; did you mean {', '.join(close)}?"
                if close
                else f"; see `splitnet points {self.name}`"
            )
            raise SplitError(f"no split point named {key!r} in {self.name}{hint}")
        return point

    def select(
        self,
        *,
        kind: str | Iterable[str] | None = None,
        names: Iterable[str] | None = None,
        indices: Iterable[int] | slice | None = None,
        pattern: str | None = None,
    ) -> list[SplitPoint]:
        """The points matching every given filter, in execution order.

        Args:
            kind: one kind or several (``"pool"``, ``("conv", "add")``).
            names: exact point names; an unknown name raises.
            indices: indices, a ``range`` or a ``slice``.
            pattern: shell-style pattern on names (``"encoder.*.pool"``).
        """
        points = list(self.points)
        if kind is not None:
            kinds = {kind} if isinstance(kind, str) else set(kind)
            unknown = kinds - set(KINDS)
            if unknown:
                raise SplitError(f"unknown kind {sorted(unknown)[0]!r}; kinds: {', '.join(KINDS)}")
            points = [p for p in points if p.kind in kinds]
        if names is not None:
            wanted = {self.point(n).index for n in names}
            points = [p for p in points if p.index in wanted]
        if indices is not None:
            if isinstance(indices, slice):
                wanted = set(range(len(self.points))[indices])
            else:
                wanted = {self.point(int(i)).index for i in indices}
            points = [p for p in points if p.index in wanted]
        if pattern is not None:
            points = [p for p in points if fnmatch.fnmatchcase(p.name, pattern)]
        return points

    def parse_points(self, spec: str | int | Iterable[str | int]) -> list[SplitPoint]:
        """The points a user's points argument names: the one parser of ``--points``.

        Args:
            spec: a comma-separated string or a list of items, each a point name,
                an index (negative counts from the end), an inclusive index range
                ``"a-b"``, a kind (``"pool"``: every point of that kind; a point
                whose name is the same word wins) or ``"all"``.

        Returns:
            The points in execution order, without repeats.

        Raises:
            SplitError: an unknown name (the message lists close names and the
                kinds), an index out of range, an empty range.

        Example:
            >>> [p.index for p in g.parse_points("3,10-12,encoder.block3.pool")]
            [3, 10, 11, 12, 16]
        """
        items = (
            spec.split(",")
            if isinstance(spec, str)
            else [spec]
            if isinstance(spec, int)
            else list(spec)
        )
        wanted: set[int] = set()
        for item in items:
            wanted.update(self._parse_item(item.strip() if isinstance(item, str) else item))
        return [p for p in self.points if p.index in wanted]

    def _parse_item(self, item: str | int) -> set[int]:
        """The indices one item of :meth:`parse_points` names."""
        if isinstance(item, int) or re.fullmatch(r"-?\d+", str(item)):
            return {self.point(int(item)).index}
        if not item:
            return set()
        if item in self._by_name:
            return {self._by_name[item].index}
        if item == "all":
            return set(range(len(self.points)))
        if item in KINDS:
            return {p.index for p in self.points if p.kind == item}
        if m := re.fullmatch(r"(\d+)\s*-\s*(\d+)", item):
            lo, hi = int(m[1]), int(m[2])
            if lo > hi:
                raise SplitError(f"empty point range {item!r}: {lo} > {hi}")
            self.point(hi)  # both ends must exist
            return set(range(lo, hi + 1))
        try:
            return {self.point(item).index}
        except SplitError as e:
            raise SplitError(
                f"{e}; a point is a name, an index 0..{len(self.points) - 1}, a range a-b, "
                f"'all' or a kind: {', '.join(KINDS)}"
            ) from None

    # -- liveness -----------------------------------------------------------------------------

    @property
    def positions(self) -> dict[fx.Node, int]:
        """Node of :attr:`graph_module` -> index of the point (operation) that produces it.

        Placeholders are ``-1``; a ``getitem`` takes its producer's index;
        ``get_attr`` and ``output`` nodes have no entry. Computed once, at trace time.
        """
        return self._pos

    @property
    def last_uses(self) -> dict[fx.Node, int]:
        """Value node -> index of the last point that reads it (``len(points)`` when
        the model's output reads it; its own index when nothing does), in graph order."""
        return self._last_use

    # -- cutting ------------------------------------------------------------------------------

    def split(self, point: int | str | SplitPoint) -> tuple[fx.GraphModule, fx.GraphModule]:
        """Cuts the graph after ``point``.

        Returns:
            ``(head, tail)``: ``head(x)`` returns the tuple of crossing tensors
            (in the order of ``point.tensors``), ``tail(*tensors)`` returns the
            model's output; ``tail(*head(x))`` equals ``model(x)`` bit for bit.
        """
        p = self.point(point)
        cross = self.crossing_nodes(p.index)
        gm = self.graph_module

        head = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        for n in gm.graph.nodes:
            if n.op == "placeholder":
                env[n] = head.placeholder(n.name)
                env[n].meta = dict(n.meta)
            elif n.op == "get_attr" or (n in self._pos and self._pos[n] <= p.index):
                env[n] = head.node_copy(n, env.__getitem__)
        head.output(tuple(env[v] for v in cross))
        head.eliminate_dead_code()

        tail = fx.Graph()
        env = {}
        used: set[str] = set()
        for v, t in zip(cross, p.tensors, strict=True):
            env[v] = tail.placeholder(_identifier(t.name, used))
            env[v].meta = dict(v.meta)
        for n in gm.graph.nodes:
            if n.op == "get_attr" or (n in self._pos and self._pos[n] > p.index):
                env[n] = tail.node_copy(n, env.__getitem__)
        (flat,) = next(n for n in gm.graph.nodes if n.op == "output").args
        tail.output(pytree.tree_unflatten([env[a] for a in flat], self._out_spec))
        tail.eliminate_dead_code()
        return fx.GraphModule(gm, head, class_name="Head"), fx.GraphModule(
            gm, tail, class_name="Tail"
        )
