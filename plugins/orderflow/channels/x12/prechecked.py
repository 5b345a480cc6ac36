"""Canonical models built without running pydantic's validation, for values proven to pass it
unchanged (issue #13 D5: nine model validations per 5-line PO were most of the 850 mapper's
time, about 43 of its string checks a Python call each).

The rule: the 850 mapper first asks a conservative check here whether validation would
accept its values *and leave them as they are* — every string within the bound of its type
(``Ident``, ``Code``, ``Text``: the constants of ``orderflow.domain.models``, the store's
bounds), already stripped, storable (no NUL, no unpaired surrogate: the models' own search),
numbers of the right type inside their numeric(p, s). Only then is the instance assembled
directly (:class:`Prechecked`); whenever the check says no, the model validates as before and
its ``ValidationError`` makes the finding (AK3/AK4). The check may say no to values the model
would take (it is stricter), never yes to values it would refuse or change:
``tests/unit/test_x12_prechecked.py`` proves, for generated and hostile 850s, that both
paths give equal results (every field, the fields set, the JSON the store keeps).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from orderflow.domain.models import (
    MAX_CODE_CHARS,
    MAX_ID_CHARS,
    MAX_TEXT_CHARS,
    PRICE_PRECISION,
    PRICE_SCALE,
    QUANTITY_PRECISION,
    QUANTITY_SCALE,
    unstorable_char,
)

M = TypeVar("M", bound=BaseModel)

#: set to False to build every model through pydantic's validation (the property test's
#: reference path, and a way out should the fast path ever be in doubt)
ENABLED = True


def _number(precision: int, scale: int) -> re.Pattern[str]:
    """A non-negative decimal that fits numeric(precision, scale) as written (before any
    normalisation, so stricter than the model: "0001.50000" is left to the model)."""
    whole = precision - scale
    return re.compile(
        rf"(?:[0-9]{{1,{whole}}}(?:\.[0-9]{{0,{scale}}})?|\.[0-9]{{1,{scale}}})", re.ASCII
    )


FITS_QUANTITY = _number(QUANTITY_PRECISION, QUANTITY_SCALE)
FITS_PRICE = _number(PRICE_PRECISION, PRICE_SCALE)
ID, CODE, TEXT = MAX_ID_CHARS, MAX_CODE_CHARS, MAX_TEXT_CHARS


class Strings:
    """The strings of one model about to be built, each with its type's bound. ``ok()`` is
    True when every one is within its bound and already stripped, and none holds a character
    the store cannot hold (one search over all of them)."""

    __slots__ = ("_all", "fits")

    def __init__(self) -> None:
        self._all: list[str] = []
        self.fits = True

    def add(self, value: str | None, limit: int, *, required: bool = False) -> None:
        if value is None:
            if required:
                self.fits = False
            return
        if len(value) > limit or value != value.strip() or (required and not value):
            self.fits = False
        self._all.append(value)

    def add_all(self, values: Iterable[str], limit: int) -> None:
        for v in values:
            if type(v) is not str or len(v) > limit or v != v.strip():
                self.fits = False
            self._all.append(v)

    def ok(self) -> bool:
        return self.fits and unstorable_char("".join(self._all)) is None


class Prechecked(Generic[M]):
    """Builds ``model`` from values the caller proved valid: the instance validation would
    have made (the same ``__dict__`` in field order, defaults filled in, the same fields set),
    without the validation."""

    __slots__ = ("_factories", "_model", "_template")

    def __init__(self, model: type[M]) -> None:
        self._model = model
        self._template: dict[str, Any] = {}
        self._factories: list[tuple[str, Callable[[], Any]]] = []
        for name, info in model.model_fields.items():
            if info.default_factory is not None:
                self._template[name] = None
                self._factories.append((name, info.default_factory))  # type: ignore[arg-type]
            else:
                self._template[name] = info.default
        if model.__pydantic_post_init__ or model.__private_attributes__:
            raise TypeError(f"{model.__name__} needs its own construction")  # pragma: no cover

    def __call__(self, **values: Any) -> M:
        d = self._template.copy()
        d.update(values)
        for name, factory in self._factories:
            if name not in values:
                d[name] = factory()
        obj = self._model.__new__(self._model)
        object.__setattr__(obj, "__dict__", d)
        object.__setattr__(obj, "__pydantic_fields_set__", set(values))
        object.__setattr__(obj, "__pydantic_extra__", None)
        object.__setattr__(obj, "__pydantic_private__", None)
        return obj
