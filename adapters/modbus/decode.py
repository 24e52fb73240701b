"""Pure decoders: Modbus registers and bits to float64 values (vectorised with NumPy).

Registers arrive as 16-bit words. A multi-register value's bytes are named ``A`` (most significant) to
``D`` (``H`` for 64-bit); ``byte_order`` says how they sit on the wire::

    ABCD  big-endian words, most significant word first          (Modicon/Schneider default)
    CDAB  word-swapped: least significant word first             (many Allen-Bradley/Enron-style maps)
    BADC  byte-swapped within each word, most significant first
    DCBA  fully little-endian

For 64-bit values the word swap reverses all four words (``CDAB`` = GH EF CD AB); for 16-bit values
``CDAB`` equals ``ABCD`` and ``DCBA`` equals ``BADC``. For strings the same rule applies to characters
(``BADC`` swaps the two characters of each register). ``bit`` numbers refer to the register's value
(0 = least significant) and ignore ``byte_order``.

Decoding a request is a handful of NumPy operations per *group* of same-typed values, not per value:
:class:`NumericGroup` gathers an ``(n, words)`` matrix, re-orders words by index, re-encodes the words
with the right endianness and views the bytes as the value dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from ingestd.model import STATUS_NOT_NUMERIC, Quality

__all__ = [
    "STATUS_NOT_NUMERIC",
    "VALUE_DTYPES",
    "BitGroup",
    "CoilGroup",
    "Group",
    "NumericGroup",
    "StringGroup",
    "decode_bits",
    "decode_string",
    "decode_value",
    "text_to_number",
    "words_of",
]

Words = npt.NDArray[np.uint16]
Bits = npt.NDArray[np.bool_]
Values = npt.NDArray[np.float64]


VALUE_DTYPES: Final[dict[str, np.dtype[np.generic]]] = {
    "int16": np.dtype(">i2"), "uint16": np.dtype(">u2"),
    "int32": np.dtype(">i4"), "uint32": np.dtype(">u4"),
    "int64": np.dtype(">i8"), "uint64": np.dtype(">u8"),
    "float32": np.dtype(">f4"), "float64": np.dtype(">f8"),
}
"""Big-endian dtypes: the value's bytes after :func:`_layout` put them in ``ABCD`` order."""

_BE_WORD: Final = np.dtype(">u2")
_LE_WORD: Final = np.dtype("<u2")


def _layout(byte_order: str, nwords: int) -> tuple[npt.NDArray[np.intp], np.dtype[np.uint16]]:
    """Word indexes (relative to the value's first register) and the word encoding that give ``ABCD``."""
    idx = np.arange(nwords, dtype=np.intp)
    if byte_order in ("CDAB", "DCBA"):
        idx = idx[::-1].copy()
    return idx, (_LE_WORD if byte_order in ("BADC", "DCBA") else _BE_WORD)


def words_of(registers: Sequence[int] | npt.ArrayLike) -> Words:
    """Registers (0..65535 each) as a uint16 array."""
    return np.asarray(registers, dtype=np.uint16)


def decode_value(registers: Sequence[int] | npt.ArrayLike, type_: str, byte_order: str = "ABCD") -> float:
    """Decode one numeric value from its registers (reference implementation for tests and tools)."""
    dt = VALUE_DTYPES[type_]
    words = words_of(registers)
    nwords = dt.itemsize // 2
    if words.shape[0] != nwords:
        raise ValueError(f"{type_} needs {nwords} registers, got {words.shape[0]}")
    idx, word_dt = _layout(byte_order, nwords)
    raw = words[idx].astype(word_dt).tobytes()
    return float(np.frombuffer(raw, dtype=dt)[0])


def decode_string(registers: Sequence[int] | npt.ArrayLike, byte_order: str = "ABCD") -> str:
    """Text from registers: two characters per register, NUL/space padding stripped (Latin-1)."""
    words = words_of(registers)
    idx, word_dt = _layout(byte_order, words.shape[0])
    raw = words[idx].astype(word_dt).tobytes()
    return raw.replace(b"\x00", b" ").strip().decode("latin-1")


def decode_bits(bits: Sequence[bool] | npt.ArrayLike, offsets: Sequence[int] | npt.ArrayLike) -> Values:
    return np.asarray(bits, dtype=np.bool_)[np.asarray(offsets, dtype=np.intp)].astype(np.float64)


def text_to_number(text: str) -> float | None:
    """A string register's text as a number (``"12.5"``), or ``None`` when it is not numeric."""
    try:
        return float(text)
    except ValueError:
        return None


class Group:
    """Decodes a run of output rows ``[start, stop)`` from one request's data."""

    __slots__ = ("start", "stop")

    def __init__(self, start: int, stop: int) -> None:
        self.start = start
        self.stop = stop

    def fill(self, data: npt.NDArray[np.generic], value: Values, quality: npt.NDArray[np.uint8],
             status: npt.NDArray[np.uint32]) -> None:
        raise NotImplementedError


class NumericGroup(Group):
    """``n`` values of one numeric type and byte order at word offsets ``offsets`` within a request."""

    __slots__ = ("_dtype", "_gather", "_word")

    def __init__(self, start: int, offsets: Sequence[int], type_: str, byte_order: str) -> None:
        super().__init__(start, start + len(offsets))
        self._dtype = VALUE_DTYPES[type_]
        idx, self._word = _layout(byte_order, self._dtype.itemsize // 2)
        self._gather = np.asarray(offsets, dtype=np.intp)[:, None] + idx[None, :]

    def decode(self, words: Words) -> Values:
        raw = words[self._gather].astype(self._word).view(self._dtype)
        return np.asarray(raw.ravel(), dtype=np.float64)

    def fill(self, data: npt.NDArray[np.generic], value: Values, quality: npt.NDArray[np.uint8],
             status: npt.NDArray[np.uint32]) -> None:
        value[self.start:self.stop] = self.decode(data)  # type: ignore[arg-type]


class BitGroup(Group):
    """``type = "bit"``: bit ``bits[i]`` of the register at word offset ``offsets[i]``."""

    __slots__ = ("_offsets", "_shifts")

    def __init__(self, start: int, offsets: Sequence[int], bits: Sequence[int]) -> None:
        super().__init__(start, start + len(offsets))
        self._offsets = np.asarray(offsets, dtype=np.intp)
        self._shifts = np.asarray(bits, dtype=np.uint16)

    def decode(self, words: Words) -> Values:
        return np.asarray((words[self._offsets] >> self._shifts) & 1, dtype=np.float64)

    def fill(self, data: npt.NDArray[np.generic], value: Values, quality: npt.NDArray[np.uint8],
             status: npt.NDArray[np.uint32]) -> None:
        value[self.start:self.stop] = self.decode(data)  # type: ignore[arg-type]


class CoilGroup(Group):
    """Coils or discrete inputs at bit offsets ``offsets`` within a request (1.0 = on)."""

    __slots__ = ("_offsets",)

    def __init__(self, start: int, offsets: Sequence[int]) -> None:
        super().__init__(start, start + len(offsets))
        self._offsets = np.asarray(offsets, dtype=np.intp)

    def fill(self, data: npt.NDArray[np.generic], value: Values, quality: npt.NDArray[np.uint8],
             status: npt.NDArray[np.uint32]) -> None:
        value[self.start:self.stop] = data[self._offsets]


@dataclass(frozen=True, slots=True)
class _Text:
    offset: int
    count: int
    byte_order: str


class StringGroup(Group):
    """``type = "string"``: text parsed as a number; non-numeric text is BAD with :data:`STATUS_NOT_NUMERIC`.

    The core stores numbers only, so text that is not a number cannot be stored as a value.
    """

    __slots__ = ("_texts",)

    def __init__(self, start: int, specs: Sequence[tuple[int, int, str]]) -> None:
        super().__init__(start, start + len(specs))
        self._texts = [_Text(o, c, b) for o, c, b in specs]

    def fill(self, data: npt.NDArray[np.generic], value: Values, quality: npt.NDArray[np.uint8],
             status: npt.NDArray[np.uint32]) -> None:
        for row, t in enumerate(self._texts, self.start):
            number = text_to_number(decode_string(data[t.offset:t.offset + t.count], t.byte_order))
            if number is None:
                value[row] = np.nan
                quality[row] = Quality.BAD
                status[row] = STATUS_NOT_NUMERIC
            else:
                value[row] = number
