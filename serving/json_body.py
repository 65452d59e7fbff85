"""JSON batch bodies decoded straight into each field's values, checked as they are decoded.

msgspec decodes `{"customers": [...]}` against a type built from the data contract, with the
request model's rules: the fields, levels, ranges, lengths and strictness (no boolean or text
for a number, no fraction for an integer). It builds no dict per customer and no key strings,
so a 1,000-customer body becomes columns in half the time orjson and a check per column took
(measured: 1.6 ms against 3.1 ms). It is the fast path only: a body it refuses goes to the
pydantic request model, whose verdict is final and whose errors the API answers with; a test
holds this path to accepting nothing the model refuses.

A body names each field as the contract does, or, where the contract renames an export's
header, every such field by the export's header (a type of its own); a body mixing the two
goes to the request model, which also takes that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import msgspec

from churn_assets.ml.data.contract import Contract
from churn_assets.ml.data.limits import MAX_ID_CHARS
from serving.schemas import MAX_LEVEL_CHARS, aliases, required_fields

#: A blank number as the export writes it: text of only spaces (`blank_as_none` reads it).
_BLANK = Annotated[str, msgspec.Meta(pattern=r"^\s*$")]


def _number(contract: Contract, field: str) -> Any:
    spec = contract.features[field]
    low, high = contract.numeric_range(field)
    integer = spec.type == "integer"
    limits: dict[str, Any] = {}
    if math.isfinite(low):
        limits["ge"] = math.ceil(low) if integer else low
    if math.isfinite(high):
        limits["le"] = math.floor(high) if integer else high
    # msgspec is strict as the request model is: an integer takes no 1.0 and no true
    kind: Any = Annotated[int if integer else float, msgspec.Meta(**limits)]
    return kind if spec.blank is None else kind | _BLANK | None


def _kind(contract: Contract, field: str) -> Any:
    if field == contract.id:
        return Annotated[str, msgspec.Meta(max_length=MAX_ID_CHARS)] | None
    spec = contract.features[field]
    if spec.numeric:
        return _number(contract, field)
    if spec.levels is None:  # learned in training: any text of a sane length
        return Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_LEVEL_CHARS)]
    return Literal[tuple(spec.levels)]


class JsonBody:
    """Decodes batch bodies for one data contract into each field's values, in request order.

    `exported`: fields the contract renames go by the export's header instead of their own
    name.
    """

    def __init__(self, contract: Contract, exported: bool = False) -> None:
        headers = {name: header for header, name in aliases(contract).items()} if exported else {}
        self.fields: list[str] = [*([contract.id] if contract.id else []), *contract.features]
        # Attributes are positional names: a field's own name need not be an identifier.
        required = set(required_fields(contract))
        attributes: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        for i, field in enumerate(self.fields):
            kind = _kind(contract, field)
            attributes.append((f"f{i}", kind) if field in required else (f"f{i}", kind, None))
        customer = msgspec.defstruct(
            "Customer",
            attributes,
            rename={f"f{i}": headers.get(field, field) for i, field in enumerate(self.fields)},
            kw_only=True,
            forbid_unknown_fields=True,
            gc=False,  # many small objects that never reference each other
        )
        batch = msgspec.defstruct(
            "BatchRequest",
            [("customers", Annotated[list[customer], msgspec.Meta(min_length=1)])],  # type: ignore[valid-type]
            forbid_unknown_fields=True,
        )
        self._decoder = msgspec.json.Decoder(batch)

    def values(self, body: bytes) -> dict[str, Sequence[Any]] | None:
        """Each field's values, a customer each; None when the body is not plainly valid."""
        try:
            customers = self._decoder.decode(body).customers  # type: ignore[attr-defined]
        except msgspec.MsgspecError:
            return None
        columns = zip(*map(msgspec.structs.astuple, customers), strict=True)
        return dict(zip(self.fields, columns, strict=True))
