"""JSON for the worker without `import json`: the json package imports re (and with it enum,
functools and collections), ~8 ms of a cold start, for regular expressions the worker never
needs. CPython's own C accelerator (_json, what json uses underneath) does the work here with
json's default settings, so results are the same as json.loads / json.dumps. Without _json
(another Python implementation) this falls back to the json package."""

try:
    import _json

    class _DecoderSettings:
        # What json.JSONDecoder() passes to the C scanner by default.
        strict = True
        object_hook = None
        object_pairs_hook = None
        parse_float = float
        parse_int = int
        memo = {}

        @staticmethod
        def parse_constant(name):
            return {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}[name]

    _scan = _json.make_scanner(_DecoderSettings())

    def _not_serializable(o):
        raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")

    def _encoder(item_separator, key_separator):
        return _json.make_encoder({}, _not_serializable, _json.encode_basestring_ascii, None,
                                  key_separator, item_separator, False, False, True)

    _compact = _encoder(",", ":")
    _spaced = _encoder(", ", ": ")

    def loads(text):
        """json.loads for str or UTF-8 bytes; a ValueError names the position of a problem."""
        if not isinstance(text, str):
            text = bytes(text).decode("utf-8")
        text = text.strip(" \t\n\r")
        try:
            value, end = _scan(text, 0)
        except StopIteration as stop:
            raise ValueError(f"Expecting value: char {stop.value}") from None
        if end != len(text):
            raise ValueError(f"Extra data: char {end}")
        return value

    def dumps(value, compact=False):
        """json.dumps(value) (or with separators (',', ':') when compact)."""
        return "".join((_compact if compact else _spaced)(value, 0))

except (ImportError, AttributeError, TypeError):  # not CPython: the json package it is
    import json as _json_module

    def loads(text):
        return _json_module.loads(text)

    def dumps(value, compact=False):
        return _json_module.dumps(value, separators=(",", ":") if compact else None)
