"""How large a landed file, a line and a field may be: refused beyond, before they are read.

The defaults fit any real export many times over (a row is a few hundred bytes, ten million
customers are about 1.3 GB); they exist so that a broken or hostile file is refused with a
clear message instead of exhausting the worker's memory. The field limit is shared with the
API, which builds its request schema from it: the same customerID is accepted by both or by
neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: The largest extract accepted by default (CHURN_MAX_EXTRACT_MB).
DEFAULT_MAX_EXTRACT_BYTES: Final = 2048 * 2**20
#: The longest line of a customer file by default (CHURN_MAX_LINE_BYTES).
DEFAULT_MAX_LINE_BYTES: Final = 65_536
#: The longest customerID accepted, by cleaning and by the API alike.
MAX_ID_CHARS: Final = 128


@dataclass(frozen=True)
class ExtractLimits:
    """How large a landed file and any line in it may be; larger is refused, never read."""

    max_file_bytes: int = DEFAULT_MAX_EXTRACT_BYTES
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
