"""Online colorization with Ray Serve: ``semcolor.serve:app`` (the typed application builder) and ``semcolor serve``.

``app``, ``build_app`` and ``ServeArgs`` are imported on first use, so the HTTP helpers of this package load
without Ray.
"""

from typing import Any

__all__ = ["app", "build_app", "ServeArgs"]


def __getattr__(name: str) -> Any:
    if name in ("app", "build_app"):
        from semcolor.serve import builder as module

        return getattr(module, name)
    if name == "ServeArgs":
        from semcolor.serve.args import ServeArgs

        return ServeArgs
    raise AttributeError(f"module 'semcolor.serve' has no attribute {name!r}")
