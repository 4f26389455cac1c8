"""The STE registry: named, parameterised estimators; the built-ins are registered on first use (see
:mod:`stelab.ste` for the conventions and properties)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from ..errors import first_line, unknown_name
from .piecewise import Piecewise  # noqa: F401  (stelab.ste.Piecewise, as before)
from .probe import probe

DerivativeFn = Callable[..., Tensor]

# The three STEs compared by Yin et al. (2019), in the order of their Table 1, and the library's default STE (the one
# their analysis and experiments favour). Every list of "the paper's STEs" and every default in stelab is these two.
PAPER_STES: tuple[str, ...] = ("identity", "relu", "clipped_relu")
DEFAULT_STE = "clipped_relu"


@dataclass(frozen=True)
class STE:
    """A named straight-through estimator: the proxy derivative ``mu'(x; top)`` plus its declared properties."""

    name: str
    derivative_fn: DerivativeFn | None = field(repr=False)
    proxy_fn: DerivativeFn | None = field(default=None, repr=False)
    monotone: bool = True
    zero_below: bool = False
    scale_invariant: bool = False
    piecewise: Piecewise | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    doc: str = field(default="", repr=False)

    def derivative(self, x: Tensor, top: float | Tensor = 1.0) -> Tensor:
        """``mu'(x; top)``, same shape and dtype as ``x`` (from the table for a piecewise STE)."""
        if self.piecewise is not None:
            return self.piecewise.derivative(x, top).to(x.dtype)
        out = self.derivative_fn(x, top, **self.params)
        if not isinstance(out, Tensor):
            out = torch.as_tensor(out, dtype=x.dtype, device=x.device)
        return out.to(x.dtype).expand_as(x)

    def proxy(self, x: Tensor, top: float | Tensor = 1.0) -> Tensor:
        """``mu(x; top)`` (for plots and documentation); raises if the STE was registered by its derivative only."""
        if self.proxy_fn is None:
            raise ValueError(f"STE {self.name!r} was registered by its derivative only; it has no proxy function")
        return self.proxy_fn(x, top, **self.params)

    @property
    def label(self) -> str:
        """``name`` or ``name(k=v, ...)`` — also the string :func:`get` parses back."""
        if not self.params:
            return self.name
        inner = ", ".join(f"{k}={v!r}" for k, v in sorted(self.params.items()))
        return f"{self.name}({inner})"

    def __reduce__(self):
        # Copies and pickles (deepcopy of a model, torch.save) go by name: the functions may be closures or
        # lambdas, and the registry rebuilds the same STE from its name and parameters.
        return (_get_with, (self.name, dict(self.params)))


@dataclass(frozen=True)
class _Entry:
    factory: Callable[..., STE]
    # A plain dict, not a MappingProxyType: torch.compile traces get() (stelab.quantize) and graph-breaks on reading
    # a mapping proxy after any dict mutation (a dataclass's __init__ counts). Private to the registry.
    defaults: dict[str, Any]


_REGISTRY: dict[str, _Entry] = {}
_CACHE: dict[tuple, STE] = {}
_BUILTIN_NAMES: set[str] = set()  # registered by stelab.ste.builtin (protected from unregister)
_BUILTINS_LOADED = False


def _registry() -> dict[str, _Entry]:
    """The registry, with the built-in STEs of :mod:`stelab.ste.builtin` registered on first use, then the users'
    ones of ``$STELAB_IMPORT`` (``--import``) and the ``stelab.stes`` entry points (:mod:`stelab.ste.plugins`)."""
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        from .plugins import load_external

        _register_builtins()
        load_external()
    return _REGISTRY


def names() -> list[str]:
    """Registered STE names, sorted."""
    return sorted(_registry())


def get(name: str | STE, **params: Any) -> STE:
    """The STE called ``name``; parameters as keywords or in the name: ``get("leaky_relu(slope=0.05)")``.

    An :class:`STE` instance is returned as it is (so every API that takes a name also takes an STE).
    """
    if isinstance(name, STE):
        if params:
            raise ValueError("parameters cannot be given together with an STE instance")
        return name
    if not isinstance(name, str):
        raise TypeError(f"STE must be a name (str) or an STE, got {type(name).__name__}; valid names: {names()}")
    base, parsed = parse_spec(name)
    registry = _registry()
    if base not in registry:
        raise ValueError(f"{unknown_name('STE', base, registry)} (a user's STE: register it first, e.g. stelab "
                         "--import my_stes.py ...)")
    entry = registry[base]
    merged = {**parsed, **params}
    unknown = set(merged) - set(entry.defaults)
    if unknown:
        valid = ", ".join(sorted(entry.defaults)) or "none"
        raise ValueError(f"STE {base!r} has no parameter(s) {sorted(unknown)}; its parameters: {valid}")
    full = {**entry.defaults, **merged}
    # the values' types in the key: 3 and 3.0 are equal and hash alike, but label differently ("levels=3")
    key = (base, tuple(sorted((k, type(v).__name__, v) for k, v in full.items())))
    try:
        return _CACHE[key]
    except KeyError:  # a user STE measures its properties when built: do that once per parameter set
        _CACHE[key] = _build(entry, base, full)
        return _CACHE[key]
    except TypeError:  # an unhashable parameter value: build it every time
        return _build(entry, base, full)


def _build(entry: _Entry, name: str, params: dict[str, Any]) -> STE:
    """``entry``'s STE with ``params``, its ``mu'`` probed (:func:`stelab.ste.probe.probe`): a bad value
    (``swish_sign(beta=0)``) or a broken user function fails here, in one line, not at the first backward."""
    if torch.compiler.is_compiling():  # traced inside a compiled function: the eager first use checked it
        return entry.factory(**params)
    label = f"{name}({', '.join(f'{k}={v!r}' for k, v in sorted(params.items()))})" if params else name
    try:
        ste = entry.factory(**params)
        if ste.piecewise is None:
            probe(ste)
        return ste
    except Exception as err:  # anything a user's function raises; re-raised as the one error a caller expects
        raise ValueError(f"STE {label} is not usable: {first_line(err)}") from None


def _get_with(name: str, params: dict[str, Any]) -> STE:
    return get(name, **params)


_CALL = re.compile(r"^\s*([A-Za-z_][\w\-]*)\s*(?:\((.*)\))?\s*$")


def parse_spec(text: str, kind: str = "STE") -> tuple[str, dict[str, Any]]:
    """``"name(key=value, ...)"`` -> ``(name, {key: float(value)})``: the spec form of every parameterised registry
    (STEs, weight quantizers); ``kind`` names it in the errors."""
    match = _CALL.match(text)
    if not match:
        raise ValueError(f"cannot parse {kind} spec {text!r}; expected 'name' or 'name(param=value, ...)'")
    base, inner = match.group(1), match.group(2)
    params: dict[str, Any] = {}
    if inner and inner.strip():
        for part in inner.split(","):
            key, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"{kind} parameter {part.strip()!r} in {text!r} must be written key=value")
            try:
                params[key.strip()] = float(value)
            except ValueError:
                raise ValueError(f"{kind} parameter {key.strip()!r} must be a number, got {value.strip()!r}") from None
    return base, params



def register(name: str, derivative: DerivativeFn | None = None, *, proxy: DerivativeFn | None = None,
             monotone: bool | None = None, zero_below: bool | None = None, scale_invariant: bool | None = None,
             piecewise: Piecewise | Callable[..., Piecewise] | None = None, doc: str = "",
             overwrite: bool = False) -> None:
    """Register an STE under ``name``.

    Give ``mu'`` one way: ``derivative(x, top, **params) -> mu'(x)``; or ``proxy(x, top, **params) -> mu(x)``
    (elementwise; its derivative is then taken by autograd); or, for a piecewise-constant ``mu'``, its
    :class:`Piecewise` table alone, or a function of keyword parameters returning the table (the fused op runs it;
    the derivative and the properties follow from the table, and ``proxy`` may still be given for plots). Keyword
    parameters with defaults in the function's signature become the STE's parameters (``my_ste(slope=0.2)``).
    Properties left as ``None`` are measured numerically on a grid (:func:`measure_properties`).
    """
    if not isinstance(name, str) or not _CALL.match(name) or "(" in name:
        raise ValueError(f"STE name must be an identifier, got {name!r}")
    if name in _registry() and not overwrite:  # built-ins first, so that a user's overwrite of one stands
        raise ValueError(f"STE {name!r} is already registered; pass overwrite=True to replace it")
    if piecewise is not None:
        if derivative is not None or {monotone, zero_below, scale_invariant} != {None}:
            raise ValueError("a Piecewise table defines mu' and the properties; give no derivative or flags with it")
        table = piecewise if callable(piecewise) else (lambda: piecewise)
        text = doc or (table.__doc__ or "" if callable(piecewise) else "")
        _REGISTRY[name] = _Entry(lambda **p: _piecewise_ste(name, table(**p), proxy, text, p),
                                 _defaults(table, skip=0))
        _CACHE.clear()
        return
    if derivative is None and proxy is None:
        raise ValueError("register needs a derivative (mu'), a proxy (mu) or a Piecewise table")
    fn = derivative if derivative is not None else _autograd_derivative(proxy)  # type: ignore[arg-type]
    source = derivative if derivative is not None else proxy
    defaults = _defaults(source)  # type: ignore[arg-type]
    declared = {"monotone": monotone, "zero_below": zero_below, "scale_invariant": scale_invariant}

    def factory(**params: Any) -> STE:
        frozen = MappingProxyType(dict(params))
        candidate = STE(name, fn, proxy, params=frozen)
        probe(candidate)  # before the grid measurement: its errors are clearer
        measured = measure_properties(candidate)
        props = {k: measured[k] if v is None else v for k, v in declared.items()}
        return STE(name, fn, proxy, params=frozen, doc=doc or source.__doc__ or "", **props)  # type: ignore[union-attr]

    entry = _Entry(factory, defaults)
    _build(entry, name, dict(defaults))  # a broken function fails at registration, not at a later get()
    _REGISTRY[name] = entry
    _CACHE.clear()


def _piecewise_ste(name: str, table: Piecewise, proxy: DerivativeFn | None, doc: str,
                   params: Mapping[str, Any] | None = None) -> STE:
    """An STE defined by its table: ``mu'``, the fused op's state and the three properties all come from it."""
    return STE(name, None, proxy, piecewise=table, params=MappingProxyType(dict(params or {})), doc=doc,
               **table.flags())


def unregister(name: str) -> None:
    """Remove a user-registered STE. Built-ins cannot be removed (every command and saved config relies on them);
    ``register(name, ..., overwrite=True)`` replaces one instead."""
    if name not in _registry():
        raise unknown_name("STE", name, _REGISTRY)
    if name in _BUILTIN_NAMES:
        raise ValueError(f"STE {name!r} is built in and cannot be unregistered; register(..., overwrite=True) "
                         "replaces it for this process")
    del _REGISTRY[name]
    _CACHE.clear()


def _defaults(fn: Callable, skip: int = 2) -> dict[str, Any]:
    """The keyword parameters of ``fn`` after its first ``skip`` (``x, top``) ones, with their defaults."""
    out = {}
    for i, p in enumerate(inspect.signature(fn).parameters.values()):
        if i < skip:
            continue
        if p.default is inspect.Parameter.empty:
            raise ValueError(f"STE parameter {p.name!r} of {fn.__name__} needs a default value")
        out[p.name] = p.default
    return out


def _autograd_derivative(proxy: DerivativeFn) -> DerivativeFn:
    def derivative(x: Tensor, top: float | Tensor, **params: Any) -> Tensor:
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(proxy(leaf, top, **params).sum(), leaf)
        return grad

    return derivative


def measure_properties(ste: STE, top: float = 1.0, points: int = 4001) -> dict[str, bool]:
    """Measure ``monotone``, ``zero_below`` and ``scale_invariant`` on a float64 grid over ``[-4 top, 4 top]``.

    A grid can only refute a property, so this is what :func:`register` infers for properties not declared.
    """
    x = torch.linspace(-4 * top, 4 * top, points, dtype=torch.float64)
    d = ste.derivative(x, top)
    scaled = [ste.derivative(c * x, top) for c in (0.25, 3.0)]
    return {
        "monotone": bool((d >= -1e-12).all()),
        "zero_below": bool((d[x <= 0] == 0).all()),
        "scale_invariant": all(bool(torch.allclose(s, d, atol=1e-12)) for s in scaled),
    }


def _register_builtins() -> None:
    """The built-in STEs of :mod:`stelab.ste.builtin`, which lists them as data (:data:`~stelab.ste.builtin.
    BUILTINS`): a piecewise one by its table function (parameters -> :class:`Piecewise`, docstring = the math), a
    smooth one by its ``mu'`` with its properties known analytically."""
    from .builtin import BUILTINS

    for name, fn, proxy, flags in BUILTINS:
        if flags is None:  # piecewise: the table alone, registered as a user's table is
            register(name, piecewise=fn, proxy=proxy)
        else:  # declared properties, not measured: register() would probe and measure a user's smooth mu'
            def factory(_n=name, _f=fn, _p=proxy, _flags=flags, **params: Any) -> STE:
                return STE(_n, _f, _p, **_flags, params=MappingProxyType(dict(params)), doc=_f.__doc__ or "")

            _REGISTRY[name] = _Entry(factory, _defaults(fn))
        _BUILTIN_NAMES.add(name)
