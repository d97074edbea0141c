"""Models by name: the classes in ``nets/models/`` register themselves; plug-ins load by ``module:Class``.

``create("depth_cnn", conf, device)`` builds a registered model; a name of
the form ``package.module:Class`` imports that class instead (a model kept
outside this package, e.g. in a user's project or in the tests), as long as
it subclasses :class:`~nets.base.BaseModel`.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from nets.base import TASKS, BaseModel, ModelError

_REGISTRY: dict[str, type[BaseModel]] = {}
_DISCOVERED = False


def register(cls: type[BaseModel]) -> type[BaseModel]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if cls.task not in TASKS:
        raise ModelError(f"model {cls.__name__}: task {cls.task!r} is not one of {TASKS}")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ModelError(f"two models named {cls.name!r}: {_REGISTRY[cls.name].__qualname__} and {cls.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    import nets.models

    for info in pkgutil.iter_modules(nets.models.__path__):
        importlib.import_module(f"nets.models.{info.name}")
    _DISCOVERED = True


def available() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def model_class(name: str) -> type[BaseModel]:
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ModelError(f"cannot import model class {name!r}: {e}") from None
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            raise ModelError(f"{name!r} is not a nets.base.BaseModel subclass")
        return cls
    _discover()
    if name not in _REGISTRY:
        raise ModelError(f"unknown model {name!r} (have: {', '.join(available()) or 'none yet'})")
    return _REGISTRY[name]


def create(name: str, conf: dict[str, Any] | None = None, device: str = "cpu") -> BaseModel:
    return model_class(name)(conf, device)
