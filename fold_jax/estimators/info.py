"""Typed diagnostics: NamedTuples (pytrees, one class per kind of step or estimate) that
also read like the dicts fold_jax returned before: ``info["loss"]``, ``"skipped" in info``,
``info.get("accepted")``, ``info.keys()`` / ``items()``, ``dict(info)``. Fields that are
None are absent. :func:`info_type` makes a NamedTuple such a class; the estimators'
:class:`EstimateInfo` and the steps' infos (``methods.DescentInfo``, ``snes.SNESInfo``,
``search_rule.SearchInfo``) are built with it.
"""

from __future__ import annotations

from typing import Any, NamedTuple, TypeVar

from jaxtyping import Array

__all__ = ["EstimateInfo", "info_type"]

T = TypeVar("T")


def _info_get(self: Any, key: str, default: Any = None) -> Any:
    return self[key] if key in self else default


def _info_getitem(self: Any, key: Any) -> Any:
    if not isinstance(key, str):
        return tuple.__getitem__(self, key)  # positions, as any tuple
    if key in self._fields and getattr(self, key) is not None:
        return getattr(self, key)
    extra = getattr(self, "extra", None)
    if extra is not None and key in extra:
        return extra[key]
    raise KeyError(f"{type(self).__name__} has no {key!r}; it has {list(self.keys())}")


def _info_contains(self: Any, key: Any) -> bool:
    return key in self.keys()


def _info_keys(self: Any) -> list[str]:
    names = [k for k in self._fields if k != "extra" and getattr(self, k) is not None]
    return names + list(getattr(self, "extra", None) or {})


def _info_items(self: Any) -> list[tuple[str, Any]]:
    return [(k, self[k]) for k in self.keys()]


def info_type(cls: type[T]) -> type[T]:
    """Class decorator: a step-info NamedTuple that also reads like a dict.

    ``info["loss"]`` (and ``info[0]``), ``"skipped" in info``, ``info.get(name)``,
    ``info.keys()`` and ``info.items()`` work as on the dicts steps returned before;
    fields set to None are absent, and an ``extra`` field (a dict) holds entries
    without a field of their own. ``info.loss`` is the typed access.

    Args:
        cls: a NamedTuple class.

    Returns:
        ``cls``, with the mapping methods added.
    """
    cls.__getitem__ = _info_getitem
    cls.__contains__ = _info_contains
    cls.keys = _info_keys
    cls.items = _info_items
    cls.get = _info_get
    return cls



@info_type
class EstimateInfo(NamedTuple):
    """What a zeroth-order estimate reports beside ``(value, grads)``
    (``vg.with_info``, :mod:`fold_jax.estimators.zo`).

    Attributes:
        valid_directions: int32 scalar, perturbed evaluations that entered the estimate.
        dropped_directions: int32 scalar, those dropped (a non-finite loss).
    """

    valid_directions: Array
    dropped_directions: Array
