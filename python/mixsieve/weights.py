"""Mixing-weight policies for :class:`mixsieve.MixtureDataset`.

Static policies (:func:`temperature`, :func:`unimax`) return weights; :func:`schedule` makes
weights a function of the global stream position; a *controller* changes them from the training
loop: :class:`OnlineMixer` (Online Data Mixing, EXP3), :class:`DoReMi`, or any object that
follows the protocol of :class:`Controller`. How the mixture applies them: docs/mixing.md.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Union

import numpy as np

WeightsLike = Union[Mapping[str, float], Sequence[float], np.ndarray]


def _sizes(sizes: Any, what: str = "sizes") -> tuple[list[str] | None, np.ndarray]:
    if isinstance(sizes, Mapping):
        names = [str(k) for k in sizes]
        values = np.array([float(sizes[k]) for k in sizes], dtype=np.float64)
    else:
        names = None
        values = np.asarray(sizes, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"{what} must be a non-empty 1-D sequence or a dict, got shape {values.shape}")
    bad = np.flatnonzero(~np.isfinite(values) | (values < 0))
    if bad.size:
        label = names[bad[0]] if names else str(int(bad[0]))
        raise ValueError(f"{what}[{label}] = {values[bad[0]]} must be finite and >= 0")
    if not values.sum() > 0:
        raise ValueError(f"{what} are all zero")
    return names, values


def _out(names: list[str] | None, p: np.ndarray) -> Any:
    return {n: float(v) for n, v in zip(names, p)} if names is not None else p


def temperature(sizes: Mapping[str, float] | Sequence[float], tau: float = 1.0) -> Any:
    """Temperature sampling: ``p_i ∝ n_i ** (1 / tau)`` (XLM: tau = 2; mT5: tau ≈ 3.3).

    ``tau = 1`` is proportional to size, large ``tau`` tends to uniform. Sizes are in whatever
    unit you mix by (examples, tokens, characters). Returns a dict for a dict, else an array.

    >>> import mixsieve as ms
    >>> {k: round(v, 6) for k, v in ms.weights.temperature({"a": 100, "b": 10, "c": 1}, tau=2).items()}
    {'a': 0.706101, 'b': 0.223289, 'c': 0.07061}
    """
    names, n = _sizes(sizes)
    if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a finite number > 0, got {tau!r}")
    q = n / n.sum()
    with np.errstate(divide="ignore"):
        p = np.where(q > 0, np.exp(np.log(np.where(q > 0, q, 1.0)) / tau), 0.0)
    return _out(names, p / p.sum())


def unimax(sizes: Mapping[str, float] | Sequence[float], budget: float, max_epochs: float = 4) -> Any:
    """UniMax (Chung et al., ICLR 2023): uniform over sources, capped at ``max_epochs`` each.

    Sources are visited from smallest to largest; each gets an equal share of what is left of
    ``budget``, but at most ``max_epochs * size``. Raises ``ValueError`` if the budget cannot be
    spent without exceeding ``max_epochs`` on every source.

    >>> import mixsieve as ms
    >>> w = ms.weights.unimax({"big": 1000, "small": 10}, budget=500, max_epochs=4)
    >>> {k: round(v, 3) for k, v in w.items()}
    {'big': 0.92, 'small': 0.08}
    """
    names, c = _sizes(sizes)
    if not (math.isfinite(budget) and budget > 0):
        raise ValueError(f"budget must be a finite number > 0, got {budget!r}")
    if not (math.isfinite(max_epochs) and max_epochs > 0):
        raise ValueError(f"max_epochs must be a finite number > 0, got {max_epochs!r}")
    if budget > max_epochs * c.sum() * (1 + 1e-12):
        raise ValueError(
            f"budget {budget:g} exceeds max_epochs * total size = {max_epochs * c.sum():g}: every source "
            "would be capped; lower the budget or raise max_epochs"
        )
    order = np.argsort(c, kind="stable")
    remaining = float(budget)
    alloc = np.zeros_like(c)
    for i, src in enumerate(order):
        share = remaining / (len(order) - i)
        alloc[src] = min(share, max_epochs * c[src])
        remaining -= alloc[src]
    return _out(names, alloc / alloc.sum())


class WeightSchedule:
    """Weights as a function of the global stream position (see :func:`schedule`)."""

    def __init__(
        self, points: Sequence[tuple[int, WeightsLike]], interpolate: str = "step", every: int = 1024
    ):
        from ._checks import check_int

        if interpolate not in ("step", "linear"):
            raise ValueError(f"interpolate must be 'step' or 'linear', got {interpolate!r}")
        every = check_int("every", every, 1, 2**62)
        if isinstance(points, (str, bytes, Mapping)) or not isinstance(points, Sequence):
            raise TypeError("points must be a list of (position, weights) pairs")
        if not points:
            raise ValueError("a schedule needs at least one (position, weights) point")
        for i, pt in enumerate(points):
            if not isinstance(pt, (tuple, list)) or len(pt) != 2:
                raise TypeError(f"points[{i}] must be a (position, weights) pair, got {pt!r}")
        pos = [check_int(f"points[{i}] position", p, 0, 2**62) for i, (p, _) in enumerate(points)]
        if pos[0] != 0:
            raise ValueError(f"the first schedule point must be at position 0, got {pos[0]}")
        if any(b <= a for a, b in zip(pos, pos[1:])):
            raise ValueError(f"schedule positions must increase strictly, got {pos}")
        self.positions = pos
        self.points = [w for _, w in points]
        self.interpolate = interpolate
        self.every = every

    def vectors(self, names: Sequence[str]) -> list[np.ndarray]:
        return [weight_vector(w, names) for w in self.points]

    def at(self, position: int, vectors: list[np.ndarray]) -> np.ndarray:
        """The weights in force at ``position`` (linear: evaluated at the last multiple of
        ``every``), for the point vectors from :meth:`vectors`. The mixture evaluates its schedule
        with the same native code, so these are the weights it applies, bit for bit."""
        from . import _core

        out: np.ndarray = _core.curve_at(
            np.array(self.positions, np.int64),
            list(vectors),
            self.interpolate == "linear",
            self.every,
            int(position),
        )
        return out

    def next_change(self, position: int) -> int | None:
        """The first position after ``position`` where the weights change, or None."""
        from . import _core

        ones = [np.ones(1)] * len(self.positions)
        nxt: int | None = _core.curve_next_change(
            np.array(self.positions, np.int64), ones, self.interpolate == "linear", self.every, int(position)
        )
        return nxt

    def config(self) -> dict[str, Any]:
        return {"positions": self.positions, "interpolate": self.interpolate, "every": self.every}

    def __repr__(self) -> str:
        return f"WeightSchedule({len(self.positions)} points, interpolate={self.interpolate!r})"


def schedule(
    points: Sequence[tuple[int, WeightsLike]], interpolate: str = "step", *, every: int = 1024
) -> WeightSchedule:
    """Weights that change with the global position of the mixed stream (a curriculum).

    ``points`` are ``(position, weights)`` pairs, the first at position 0. ``"step"`` switches at
    each point; ``"linear"`` moves from one point to the next in steps of ``every`` positions.
    Every change starts a new segment of the exact schedule at that position, on every worker
    and rank alike, so a resumed run replays it.

    >>> import mixsieve as ms
    >>> s = ms.weights.schedule([(0, {"web": 1.0, "code": 0.0}), (1000, {"web": 0.5, "code": 0.5})])
    >>> s.next_change(0), s.next_change(1000)
    (1000, None)
    """
    return WeightSchedule(points, interpolate, every)


def weight_vector(weights: WeightsLike, names: Sequence[str]) -> np.ndarray:
    """Weights (a dict by name, or a sequence in ``names`` order) as a validated float64 vector."""
    if isinstance(weights, Mapping):
        unknown = [k for k in weights if k not in names]
        if unknown:
            raise ValueError(f"weights name unknown sources {unknown}; the sources are {list(names)}")
        missing = [n for n in names if n not in weights]
        if missing:
            raise ValueError(f"weights give no value for sources {missing}; give 0 to leave a source out")
        values: Any = [weights[n] for n in names]
    elif isinstance(weights, (str, bytes)) or not isinstance(weights, (Sequence, np.ndarray)):
        raise TypeError(
            f"weights must be a dict by source name or a sequence of numbers, got {type(weights).__name__}"
        )
    else:
        values = list(weights) if not isinstance(weights, np.ndarray) else weights
        if isinstance(weights, np.ndarray) and weights.dtype.kind not in "iuf":
            raise TypeError(f"weights must be numbers, got an array of dtype {weights.dtype}")
        if len(values) != len(names) or (isinstance(weights, np.ndarray) and weights.ndim != 1):
            shape = getattr(weights, "shape", (len(values),))
            raise ValueError(f"weights must have one value per source ({len(names)}), got shape {shape}")
    if not isinstance(values, np.ndarray):
        for n, v in zip(names, values):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise TypeError(f"weight of source {n!r} must be a number, got {v!r} ({type(v).__name__})")
    vec = np.asarray(values, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(vec) | (vec < 0))
    if bad.size:
        raise ValueError(
            f"weight of source {names[bad[0]]!r} is {vec[bad[0]]}; weights must be finite and >= 0"
        )
    if not np.any(vec > 0):
        raise ValueError("weights are all zero; at least one source needs a weight > 0")
    return vec


class Controller:
    """The protocol of a weights controller, and a base class with its plumbing.

    Any object with

    * ``weights``: a dict source name -> weight (need not sum to 1), the weights in force;
    * ``update(...)``: called by the training loop (with losses, rewards, whatever it reads),
      changing ``weights``; it may take ``position=`` (the global position where the change
      lands, see ``MixtureDataset.set_weights``);
    * ``state_dict()`` / ``load_state_dict(state)``: a JSON-serialisable state and its restore;

    can be passed as ``MixtureDataset(..., weights=controller)``. The dataset then applies the
    weights after every ``update`` at a recorded position, so the change reaches the DataLoader
    workers through shared memory and replays on resume exactly, and its ``state_dict`` carries
    the controller's state. A controller that is not a subclass of this class has its ``update``
    wrapped by the dataset (on the instance) to see each call; a subclass calls
    :meth:`_notify` itself. :class:`OnlineMixer` and :class:`DoReMi` are subclasses.

    A worked example, a controller that gives more weight to the source with the higher loss:

    >>> import mixsieve as ms
    >>> class Greedy:
    ...     def __init__(self, names):
    ...         self.weights = {n: 1.0 for n in names}
    ...     def update(self, losses):
    ...         top = max(losses, key=losses.get)
    ...         self.weights = {n: (3.0 if n == top else 1.0) for n in self.weights}
    ...     def state_dict(self):
    ...         return {"weights": self.weights}
    ...     def load_state_dict(self, state):
    ...         self.weights = dict(state["weights"])
    >>> ctl = Greedy(["a", "b"])
    >>> ds = ms.MixtureDataset({"a": ["a"] * 9, "b": ["b"] * 9}, weights=ctl, chunk_size=4)
    >>> it = iter(ds)
    >>> [next(it)[0] for _ in range(4)]
    ['a', 'b', 'a', 'b']
    >>> ctl.update({"a": 1.0, "b": 2.0}, position=4)  # lands at position 4
    >>> [next(it)[0] for _ in range(8)]
    ['b', 'b', 'a', 'b', 'b', 'b', 'a', 'b']
    """

    sync: bool = True

    def __init__(self, names: Sequence[str], *, sync: bool = True) -> None:
        self.names = [str(n) for n in names]
        if len(self.names) < 1 or len(set(self.names)) != len(self.names):
            raise ValueError(f"names must be distinct and non-empty, got {self.names}")
        self.sync = bool(sync)
        self._listeners: list[weakref.ref[Any]] = []

    @property
    def weights(self) -> dict[str, float]:  # pragma: no cover - subclasses define it
        raise NotImplementedError

    def update(self, losses: Mapping[str, float], *, position: int | None = None) -> Any:  # pragma: no cover
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    def load_state_dict(self, state: Mapping[str, Any]) -> None:  # pragma: no cover
        raise NotImplementedError

    def attach(self, listener: Callable[..., Any]) -> None:
        """Calls ``listener(weights, position)`` after each update (held by a weak reference)."""
        self._listeners.append(weakref.WeakMethod(listener))

    def _notify(self, position: int | None) -> None:
        """Tells the datasets this controller drives that ``weights`` changed."""
        vec = np.array([self.weights[n] for n in self.names], dtype=np.float64)
        alive = []
        for ref in self._listeners:
            fn = ref()
            if fn is not None:
                fn(vec, position)
                alive.append(ref)
        self._listeners = alive

    def _commit(self, state: dict[str, Any], position: int | None) -> None:
        """Notifies the datasets; if one refuses the change (a position already generated), the
        controller goes back to ``state`` (its state before the step) and the error is raised,
        so a retried step is not counted twice."""
        try:
            self._notify(position)
        except BaseException:
            self.load_state_dict(state)
            raise

    def __getstate__(self) -> dict[str, Any]:
        d = self.__dict__.copy()
        d["_listeners"] = []
        return d

    def _check_losses(self, losses: Any, what: str = "loss") -> dict[str, float]:
        if not isinstance(losses, Mapping):
            raise TypeError(f"losses must be a dict of source name -> {what}, got {type(losses).__name__}")
        out = {}
        for name, loss in losses.items():
            if name not in self.names:
                raise ValueError(f"unknown source {name!r}; the sources are {self.names}")
            if isinstance(loss, (bool, str, bytes)) or not hasattr(loss, "__float__"):
                raise TypeError(f"{what} of source {name!r} must be a number, got {loss!r}")
            value = float(loss)
            if not math.isfinite(value):
                raise ValueError(f"{what} of source {name!r} is {value}; it must be finite")
            out[name] = value
        return out


def is_controller(obj: Any) -> bool:
    """Whether ``obj`` follows the controller protocol (see :class:`Controller`)."""
    if isinstance(obj, (Mapping, Sequence, np.ndarray, WeightSchedule)):
        return False
    return all(hasattr(obj, a) for a in ("weights", "update", "state_dict", "load_state_dict")) and all(
        callable(getattr(obj, a)) for a in ("update", "state_dict", "load_state_dict")
    )


# Plain controllers (not subclasses of Controller) are watched through their class: its
# ``update`` is wrapped once, and each call tells the datasets registered for that instance.
# Nothing is stored on the instance, so its ``vars()``, pickles and copies are its own (a copy is
# not registered: it steers nothing until given to a dataset).
_WATCHED: weakref.WeakKeyDictionary[Any, list[weakref.ref[Any]]] = weakref.WeakKeyDictionary()


def _position_of(sig: Any, takes: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not takes:
        return kwargs.pop("position", None)
    try:
        bound = sig.bind(*args, **kwargs).arguments
    except TypeError:
        return kwargs.get("position")
    if "position" in bound:
        return bound["position"]
    extra = [v for v in bound.values() if isinstance(v, dict) and "position" in v]
    return extra[0]["position"] if extra else None


def _watch_class(cls: type) -> None:
    import functools
    import inspect

    original = cls.update  # type: ignore[attr-defined]
    if getattr(original, "_mixsieve_watched", False):
        return
    try:
        sig: Any = inspect.signature(original)
        params = sig.parameters
        takes = "position" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())
    except (TypeError, ValueError):
        sig, takes = None, False

    @functools.wraps(original)
    def update(self: Any, *args: Any, **kwargs: Any) -> Any:
        if sig is not None:
            position = _position_of(sig, takes, (self, *args), kwargs)
        else:
            position = kwargs.pop("position", None)
        try:
            refs = _WATCHED.get(self, [])
        except TypeError:
            refs = []
        import copy as _copy

        before = _copy.deepcopy(self.state_dict()) if refs else None
        out = original(self, *args, **kwargs)
        alive = []
        try:
            for ref in refs:
                fn = ref()
                if fn is not None:
                    fn(None, position)
                    alive.append(ref)
        except BaseException:
            self.load_state_dict(before)  # a dataset refused the change: the step is undone
            raise
        if refs:
            _WATCHED[self] = alive
        return out

    update._mixsieve_watched = True  # type: ignore[attr-defined]
    cls.update = update  # type: ignore[attr-defined]


def attach_controller(controller: Any, listener: Callable[..., Any]) -> None:
    """Calls ``listener(weights or None, position)`` after each ``controller.update`` (None: read
    ``controller.weights``)."""
    attach = getattr(controller, "attach", None)
    if callable(attach):
        attach(listener)
        return
    try:
        refs = _WATCHED.setdefault(controller, [])
    except TypeError as e:
        raise TypeError(
            f"cannot watch a {type(controller).__name__} (it cannot be weakly referenced, e.g. __slots__ "
            "without __weakref__): subclass ms.weights.Controller and call self._notify(position) after "
            "each change"
        ) from e
    _watch_class(type(controller))
    refs.append(weakref.WeakMethod(listener))


class OnlineMixer(Controller):
    """Online Data Mixing (Albalak et al. 2023): weights from an EXP3 bandit over sources.

    Call :meth:`update` from the training loop with each source's recent training loss (higher
    loss = more to learn = higher reward). With ``t`` updates so far and ``K`` sources:
    ``eps_t = min(1/K, sqrt(ln K / (K t)))``, ``p = (1 - K eps_t) softmax(eps_{t-1} R) + eps_t``
    and each reported source's reward estimate moves as ``R_i <- a R_i + (1 - a) loss_i / p_i``
    (importance-weighted, ``a = smoothing``).

    Pass the mixer as ``weights=`` of a :class:`~mixsieve.MixtureDataset`; every update then
    takes effect in the dataset at a recorded global position (reaching DataLoader workers
    through shared memory), and the dataset's ``state_dict`` carries the mixer's state.

    >>> import mixsieve as ms
    >>> m = ms.weights.OnlineMixer(["web", "code"])
    >>> m.weights
    {'web': 0.5, 'code': 0.5}
    >>> for step in range(20):  # the first updates explore (eps_t = 1/K keeps p uniform)
    ...     w = m.update({"web": 2.0, "code": 4.0})
    >>> w["code"] > w["web"]
    True
    """

    def __init__(
        self,
        names: Sequence[str],
        algorithm: str = "exp3",
        *,
        smoothing: float = 0.9,
        initial: WeightsLike | None = None,
        sync: bool = True,
    ) -> None:
        if algorithm != "exp3":
            raise ValueError(f"algorithm must be 'exp3', got {algorithm!r}")
        super().__init__(names, sync=sync)
        if not (0.0 <= smoothing < 1.0):
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}")
        self.algorithm = algorithm
        self.smoothing = float(smoothing)
        k = len(self.names)
        self._initial = weight_vector(initial, self.names) if initial is not None else np.ones(k)
        self._p = self._initial / self._initial.sum()
        self._rewards = np.zeros(k)
        self._t = 0

    @property
    def weights(self) -> dict[str, float]:
        return {n: float(v) for n, v in zip(self.names, self._p)}

    def update(self, losses: Mapping[str, float], *, position: int | None = None) -> dict[str, float]:
        """Feed per-source losses (only the sources seen since the last update); returns new weights.

        The datasets it drives switch at ``position`` (see ``MixtureDataset.set_weights``; default:
        the next chunk no worker has started). In a ``torch.distributed`` run, call it on every
        rank with the same (all-reduced) losses: the datasets then agree on the position.
        """
        k = len(self.names)
        before = self.state_dict()
        for name, loss in self._check_losses(losses).items():
            i = self.names.index(name)
            a = self.smoothing
            self._rewards[i] = a * self._rewards[i] + (1 - a) * loss / self._p[i]
        eps_prev = self._eps(self._t) if self._t > 0 else 1.0 / k
        self._t += 1
        eps = self._eps(self._t)
        z = eps_prev * self._rewards
        z = np.exp(z - z.max())
        self._p = (1 - k * eps) * z / z.sum() + eps
        self._commit(before, position)
        return self.weights

    def _eps(self, t: int) -> float:
        k = len(self.names)
        if k == 1:
            return 0.0
        return min(1.0 / k, math.sqrt(math.log(k) / (k * t)))

    def state_dict(self) -> dict[str, Any]:
        return {"names": self.names, "t": self._t, "rewards": self._rewards.tolist(), "p": self._p.tolist()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if list(state["names"]) != self.names:
            raise ValueError(
                f"mixer state is for sources {list(state['names'])}, this mixer has {self.names}"
            )
        self._t = int(state["t"])
        self._rewards = np.array(state["rewards"], dtype=np.float64)
        self._p = np.array(state["p"], dtype=np.float64)

    def __repr__(self) -> str:
        return f"OnlineMixer({self.names}, t={self._t})"


class DoReMi(Controller):
    """DoReMi's domain reweighting (Xie et al., "DoReMi: Optimizing Data Mixtures Speeds Up
    Language Model Pretraining", NeurIPS 2023), online.

    Each :meth:`update` takes per-source losses of the model being trained (the proxy, in the
    paper) and moves the weights by exponentiated gradient on the clipped excess loss over a
    reference model, then mixes in the uniform distribution:

        lambda_i = max(loss_i - reference_i, 0)          (0 for a source not reported)
        alpha    = softmax(log alpha + step_size * lambda)
        alpha    = (1 - smoothing) * alpha + smoothing / K

    :attr:`weights` are the current ``alpha`` (what the mixture samples by);
    :meth:`average_weights` are their mean over all updates, the weights the paper reports and
    trains the large model with. The paper's values: ``step_size=1.0``, ``smoothing=1e-3``.

    >>> import mixsieve as ms
    >>> ctl = ms.weights.DoReMi(["web", "code"], reference_losses={"web": 2.9, "code": 1.4})
    >>> w = ctl.update({"web": 3.1, "code": 1.5})  # web's excess 0.2 > code's 0.1
    >>> round(w["web"], 4), round(w["code"], 4)
    (0.525, 0.475)
    >>> ctl.average_weights() == w  # one update so far
    True
    """

    def __init__(
        self,
        names: Sequence[str],
        reference_losses: Mapping[str, float],
        *,
        step_size: float = 1.0,
        smoothing: float = 1e-3,
        initial: WeightsLike | None = None,
        sync: bool = True,
    ) -> None:
        super().__init__(names, sync=sync)
        ref = self._check_losses(reference_losses, "reference loss")
        self.reference = np.array([ref.get(n, math.nan) for n in self.names], dtype=np.float64)
        for what, v in (("step_size", step_size), ("smoothing", smoothing)):
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise TypeError(f"{what} must be a number, got {v!r}")
        if not (math.isfinite(step_size) and step_size > 0):
            raise ValueError(f"step_size must be a finite number > 0, got {step_size!r}")
        if not (0.0 < smoothing <= 1.0):  # 0 would let a weight underflow to 0 and stay there
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing!r}")
        self.step_size = float(step_size)
        self.smoothing = float(smoothing)
        k = len(self.names)
        start = weight_vector(initial, self.names) if initial is not None else np.ones(k)
        self._alpha = start / start.sum()
        self._sum = np.zeros(k)
        self._t = 0

    @property
    def weights(self) -> dict[str, float]:
        return {n: float(v) for n, v in zip(self.names, self._alpha)}

    def update(
        self,
        losses: Mapping[str, float] | None = None,
        *,
        excess: Mapping[str, float] | None = None,
        position: int | None = None,
    ) -> dict[str, float]:
        """One step of the reweighting. ``losses``: per-source mean losses (the sources seen
        since the last update; each needs a reference loss), clipped as ``max(loss - reference,
        0)`` per source. The paper clips each token's excess loss before averaging over a
        source's tokens: compute that in the training loop and pass it as ``excess`` (per-source
        values >= 0) instead. The datasets it drives switch at ``position`` (default: the next
        chunk no worker has started); if a dataset refuses the position, the step is undone."""
        if (losses is None) == (excess is None):
            raise TypeError(
                "pass losses= (per-source mean losses) or excess= (per-source clipped excess), not both"
            )
        lam = np.zeros(len(self.names))
        if excess is not None:
            for name, value in self._check_losses(excess, "excess").items():
                if value < 0:
                    raise ValueError(
                        f"excess of source {name!r} is {value}; it must be >= 0 (already clipped)"
                    )
                lam[self.names.index(name)] = value
        else:
            assert losses is not None
            for name, loss in self._check_losses(losses).items():
                i = self.names.index(name)
                if math.isnan(self.reference[i]):
                    raise ValueError(f"source {name!r} has no reference loss; pass it in reference_losses")
                lam[i] = max(loss - self.reference[i], 0.0)
        before = self.state_dict()
        with np.errstate(over="ignore", invalid="ignore"):
            z = np.log(self._alpha) + self.step_size * lam
        if not np.all(np.isfinite(z)):
            raise ValueError(
                f"step_size ({self.step_size}) times the excess losses overflows; use a smaller step_size"
            )
        z = np.exp(z - z.max())
        k = len(self.names)
        self._alpha = (1.0 - self.smoothing) * z / z.sum() + self.smoothing / k
        self._sum += self._alpha
        self._t += 1
        self._commit(before, position)
        return self.weights

    def average_weights(self) -> dict[str, float]:
        """The mean of the weights over all updates (the current weights before the first)."""
        avg = self._sum / self._t if self._t else self._alpha
        return {n: float(v) for n, v in zip(self.names, avg)}

    def state_dict(self) -> dict[str, Any]:
        return {"names": self.names, "t": self._t, "alpha": self._alpha.tolist(), "sum": self._sum.tolist()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if list(state["names"]) != self.names:
            raise ValueError(f"DoReMi state is for sources {list(state['names'])}, this one has {self.names}")
        alpha = np.array(state["alpha"], dtype=np.float64)
        total = np.array(state["sum"], dtype=np.float64)
        t = state["t"]
        k = len(self.names)
        ok = (
            alpha.shape == (k,)
            and total.shape == (k,)
            and bool(np.all(alpha > 0))
            and abs(float(alpha.sum()) - 1.0) < 1e-9
            and isinstance(t, int)
            and not isinstance(t, bool)
            and t >= 0
            and bool(np.all(np.isfinite(total)))
            and bool(np.all(total >= 0))
            and abs(float(total.sum()) - t) <= 1e-6 * max(t, 1)
        )
        if not ok:
            raise ValueError(
                "corrupt DoReMi state: alpha must be k positive numbers summing to 1, t an int >= 0, "
                "sum k numbers >= 0 summing to t"
            )
        self._alpha, self._sum, self._t = alpha, total, t

    def __repr__(self) -> str:
        return f"DoReMi({self.names}, t={self._t})"
