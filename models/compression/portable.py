"""The exported policy: JSON weights and a reference numpy forward pass, no TensorFlow needed.

The JSON document (``format`` = :data:`FORMAT`) is everything another runtime (the Go side of
DWCP) needs to make the same decision:

* ``state_fields``: the telemetry fields of a state, in order; missing ones take ``defaults``.
* ``features``: the names of the fixed transform of :func:`models.compression.states.features`
  (``log10`` of throughput (floor 0.01), rtt (floor 0.01) and ``loss + 1e-7``, ``log2`` of
  streams (floor 1), ``cpu/100``, ``ln(max(1 - cpu/100, 0.01))``, ``ln(max(ratio, 1))``,
  delta hit rate; cpu clipped to [0, 100], loss and hit rate to [0, 1]).
* ``normalization``: ``x = (features - mean) / std``.
* ``layers``: dense layers in order, ``x = activation(x @ kernel + bias)``; ``kernel`` has shape
  ``[inputs, units]``. Arrays are ``{"shape": [...], "dtype": "<f4", "data": base64}``:
  little-endian float32, row-major (C order), base64 (RFC 4648) encoded.
* ``activation`` is ``relu`` or ``softmax``; the last layer's softmax gives one probability
  per entry of ``actions``; the decision is the arg-max, its probability the confidence.

Examples
--------
A one-layer policy (a nearest-centroid rule on standardised features) in the portable form;
its agreement with the transfer-time model's best action on simulated fleet states:

>>> from producers.compression_states import fleet_states
>>> from models.compression.states import features
>>> from models.compression.transfer import TransferModel
>>> model = TransferModel()
>>> states = fleet_states(seed=2, nodes=8, hours=1.0, interval_s=120.0)
>>> x, best = features(states), model.best(states)
>>> mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
>>> z = (x - mean) / std
>>> c = np.array([z[best == k].mean(axis=0) if (best == k).any() else z.mean(axis=0) * 0
...               for k in range(len(model.names))])
>>> policy = PortablePolicy(
...     actions=model.table.actions, mean=mean, std=std,
...     layers=[Dense(c.T, -0.5 * (c**2).sum(axis=1), "softmax")], version="centroids")
>>> agreement = float((policy.predict(states) == best).mean())
>>> round(agreement, 3)
0.558
>>> PortablePolicy.from_json(policy.to_json()).predict(states[:5]).tolist() == \\
...     policy.predict(states[:5]).tolist()
True
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.compression.codecs import Action
from models.compression.errors import PortableFormatError
from models.compression.states import DEFAULTS, FEATURE_NAMES, STATE_FIELDS, features

__all__ = ["FORMAT", "Dense", "PortablePolicy", "decode_array", "encode_array"]

FORMAT = "dwcp-compression-policy/1"
ACTIVATIONS = ("relu", "softmax")


def encode_array(a: np.ndarray) -> dict[str, Any]:
    """``{"shape", "dtype": "<f4", "data": base64}`` of ``a`` as little-endian float32."""
    a32 = np.ascontiguousarray(a, dtype="<f4")
    return {
        "shape": list(a32.shape),
        "dtype": "<f4",
        "data": base64.b64encode(a32.tobytes()).decode(),
    }


def decode_array(d: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`encode_array` (float32)."""
    try:
        if d["dtype"] != "<f4":
            raise PortableFormatError(f"array dtype {d['dtype']!r} is not '<f4'")
        raw = base64.b64decode(d["data"], validate=True)
        return np.frombuffer(raw, dtype="<f4").reshape(d["shape"]).astype(np.float32)
    except PortableFormatError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise PortableFormatError(f"bad array in portable policy: {exc!r}") from None


@dataclass(frozen=True, eq=False)
class Dense:
    """One dense layer: ``activation(x @ kernel + bias)``."""

    kernel: np.ndarray
    bias: np.ndarray
    activation: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "kernel", np.asarray(self.kernel, dtype=np.float32))
        object.__setattr__(self, "bias", np.asarray(self.bias, dtype=np.float32))
        if self.activation not in ACTIVATIONS:
            raise PortableFormatError(f"activation {self.activation!r} is not one of {ACTIVATIONS}")
        if self.kernel.ndim != 2 or self.bias.shape != (self.kernel.shape[1],):
            raise PortableFormatError(
                f"dense layer shapes do not fit: kernel {self.kernel.shape}, bias {self.bias.shape}"
            )


@dataclass(frozen=True, eq=False)
class PortablePolicy:
    """A trained policy as plain arrays; :meth:`predict_proba` is the reference forward pass."""

    actions: Sequence[Action]
    mean: np.ndarray
    std: np.ndarray
    layers: Sequence[Dense]
    version: str
    metadata: dict[str, Any] = field(default_factory=dict)
    _w: list[tuple[np.ndarray, np.ndarray, str]] = field(
        init=False, repr=False, default_factory=list
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", np.asarray(self.mean, dtype=np.float32))
        object.__setattr__(self, "std", np.asarray(self.std, dtype=np.float32))
        object.__setattr__(self, "actions", tuple(self.actions))
        object.__setattr__(self, "layers", tuple(self.layers))
        width = len(FEATURE_NAMES)
        if self.mean.shape != (width,) or self.std.shape != (width,):
            raise PortableFormatError(f"normalization must have {width} entries")
        for layer in self.layers:
            if layer.kernel.shape[0] != width:
                raise PortableFormatError(
                    f"layer expects {layer.kernel.shape[0]} inputs, the previous gives {width}"
                )
            width = layer.kernel.shape[1]
        if not self.layers or self.layers[-1].activation != "softmax":
            raise PortableFormatError("the last layer must be a softmax")
        if width != len(self.actions):
            raise PortableFormatError(f"{width} outputs for {len(self.actions)} actions")
        # float64 copies for the forward pass (more exact than float32, same weights)
        w = [
            (lay.kernel.astype(np.float64), lay.bias.astype(np.float64), lay.activation)
            for lay in self.layers
        ]
        object.__setattr__(self, "_w", w)

    @property
    def names(self) -> tuple[str, ...]:
        """Action names, in output order."""
        return tuple(a.name for a in self.actions)

    @property
    def n_params(self) -> int:
        """Number of weights (normalization included)."""
        return 2 * self.mean.size + sum(lay.kernel.size + lay.bias.size for lay in self.layers)

    def predict_proba(self, states: np.ndarray) -> np.ndarray:
        """Probabilities of each action, shape ``(n, n_actions)`` (reference forward pass)."""
        return self.forward(features(states))

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The forward pass from features (``features(states)``) to probabilities."""
        h = (np.asarray(x, dtype=np.float64) - self.mean) / self.std
        for kernel, bias, activation in self._w:
            h = h @ kernel + bias
            if activation == "relu":
                np.maximum(h, 0.0, out=h)
            else:
                h -= h.max(axis=1, keepdims=True)
                np.exp(h, out=h)
                h /= h.sum(axis=1, keepdims=True)
        return h

    def predict(self, states: np.ndarray) -> np.ndarray:
        """Index of the chosen action for each state."""
        return self.predict_proba(states).argmax(axis=1)

    # -- JSON --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON document (see the module docstring)."""
        return {
            "format": FORMAT,
            "version": self.version,
            "actions": [{"name": a.name, "codec": a.codec, "level": a.level} for a in self.actions],
            "state_fields": list(STATE_FIELDS),
            "defaults": DEFAULTS,
            "features": list(FEATURE_NAMES),
            "normalization": {"mean": encode_array(self.mean), "std": encode_array(self.std)},
            "layers": [
                {
                    "units": int(lay.kernel.shape[1]),
                    "activation": lay.activation,
                    "kernel": encode_array(lay.kernel),
                    "bias": encode_array(lay.bias),
                }
                for lay in self.layers
            ],
            "metadata": self.metadata,
        }

    def to_json(self) -> str:
        """Compact JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PortablePolicy:
        """Read a document written by :meth:`to_dict`; raises :class:`PortableFormatError`."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise PortableFormatError(f"not a {FORMAT} document (format {got!r})")
        try:
            if list(d["state_fields"]) != list(STATE_FIELDS) or list(d["features"]) != list(
                FEATURE_NAMES
            ):
                raise PortableFormatError("state fields or features differ from this version's")
            return cls(
                actions=[Action(a["name"], a["codec"], int(a["level"])) for a in d["actions"]],
                mean=decode_array(d["normalization"]["mean"]),
                std=decode_array(d["normalization"]["std"]),
                layers=[
                    Dense(decode_array(lay["kernel"]), decode_array(lay["bias"]), lay["activation"])
                    for lay in d["layers"]
                ],
                version=str(d["version"]),
                metadata=dict(d.get("metadata", {})),
            )
        except (KeyError, TypeError) as exc:
            raise PortableFormatError(f"portable policy lacks {exc!r}") from None

    @classmethod
    def from_json(cls, text: str | bytes) -> PortablePolicy:
        """Parse :meth:`to_json` output."""
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise PortableFormatError(f"portable policy is not valid JSON: {exc}") from None
