"""Google's partial-response `fields` mask: parse, validate against a schema, apply.

Grammar: `mask := selection ("," selection)*`, `selection := path ["(" mask ")"]`,
`path := name ("/" name)*`, where a name may be `*`. Lists are transparent:
`users(id)` selects `id` in every element of `users`.
"""

from __future__ import annotations

import re
from typing import Any

from .wire import ApiError

# A mask maps a field name (or "*") to its sub-mask; None selects the whole subtree.
Mask = dict[str, "Mask | None"]
_UNSELECTED: Any = object()  # what `apply` finds for a key its mask does not name
# A schema maps field names to a sub-schema; None means a leaf or free-form value.
Schema = dict[str, "Schema | None"]

_TOKEN = re.compile(r"\s*([A-Za-z0-9_*$.-]+|[(),/])")


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = self._tokenize(text)
        self.text = text
        self.pos = 0

    def _tokenize(self, text: str) -> list[str]:
        tokens, pos = [], 0
        while pos < len(text.rstrip()):
            match = _TOKEN.match(text, pos)
            if match is None:
                raise invalid_selection(text)
            tokens.append(match.group(1))
            pos = match.end()
        return tokens

    def parse(self) -> Mask:
        mask = self._mask()
        if self.pos != len(self.tokens):
            raise invalid_selection(self.text)
        return mask

    def _mask(self) -> Mask:
        mask: Mask = {}
        while True:
            path, sub = self._selection()
            _merge(mask, path, sub)
            if self._peek() != ",":
                return mask
            self.pos += 1

    def _selection(self) -> tuple[list[str], Mask | None]:
        path = [self._name()]
        while self._peek() == "/":
            self.pos += 1
            path.append(self._name())
        if self._peek() != "(":
            return path, None
        self.pos += 1
        sub = self._mask()
        if self._peek() != ")":
            raise invalid_selection(self.text)
        self.pos += 1
        return path, sub

    def _name(self) -> str:
        token = self._peek()
        if token is None or token in "(),/":
            raise invalid_selection(self.text)
        self.pos += 1
        return token

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None


def _merge(mask: Mask, path: list[str], sub: Mask | None) -> None:
    """Add `a/b/c(sub)` to the mask; a whole-subtree selection wins over a partial one."""
    head, rest = path[0], path[1:]
    child = {rest[-1]: sub} if rest else sub
    for name in reversed(rest[:-1]):
        child = {name: child}
    if head in mask and (mask[head] is None or child is None):
        mask[head] = None
    elif head in mask:
        for name, grandchild in child.items():  # type: ignore[union-attr]
            _merge(mask[head], [name], grandchild)  # type: ignore[arg-type]
    else:
        mask[head] = child


def invalid_selection(field_name: str) -> ApiError:
    return ApiError(
        400, "invalidParameter", f"Invalid field selection {field_name}", location="fields", location_type="parameter"
    )


def parse_mask(text: str) -> Mask:
    return _Parser(text).parse()


def validate(mask: Mask, schema: Schema) -> None:
    """Reject unknown field names, as Google does, where the schema knows the object."""
    for name, sub in mask.items():
        if name == "*":
            continue
        if name not in schema:
            raise invalid_selection(name)
        if sub is not None and schema[name] is not None:
            validate(sub, schema[name])  # type: ignore[arg-type]


def apply(value: Any, mask: Mask | None) -> Any:
    if mask is None:
        return value
    if isinstance(value, list):
        return [apply(item, mask) for item in value]
    if not isinstance(value, dict):
        return value
    wildcard = mask.get("*", _UNSELECTED)
    return {  # in the resource's own key order; a None sub-mask keeps the whole value
        key: item if sub is None else apply(item, sub)
        for key, item in value.items()
        if (sub := mask.get(key, wildcard)) is not _UNSELECTED
    }


def select(payload: dict[str, Any], fields_param: str | None, schema: Schema) -> dict[str, Any]:
    """Apply a `fields` query value; an absent or empty one returns everything."""
    if not fields_param or not fields_param.strip():
        return payload
    mask = parse_mask(fields_param)
    validate(mask, schema)
    selected: dict[str, Any] = apply(payload, mask)
    return selected
