#!/usr/bin/env python3
"""Writes the seed corpus of fuzz/frame_fuzz.cpp (binary frames are not hand-editable).
Each file is a mode byte (see frame_fuzz.cpp) and then the input of that mode."""
import json, os, struct

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "frame")
os.makedirs(here, exist_ok=True)

def frame(ftype, header, body=b""):
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack(">IBI", 1 + 4 + len(h) + len(body), ftype, len(h)) + h + body

INVOKE, RESULT = 3, 4
invoke = frame(INVOKE, {"id": "i1", "trigger": "http", "attempt": 1, "deadline_ms": 1700000000000,
                        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                        "attributes": {"id": "e1", "source": "/http", "type": "nimbus.http.request", "subject": "",
                                       "time_ms": 1700000000000},
                        "metadata": {"content-type": "application/json"},
                        "http": {"method": "POST", "path": "/orders/1", "query": "a=b",
                                 "headers": [["host", "x"], ["accept", "*/*"]], "params": {"id": "1"}}}, b'{"n":1}')
result = frame(RESULT, {"id": "i1", "status": "ok", "http": {"status": 201, "headers": [["content-type", "text/plain"]]}},
               b"created")
error = frame(RESULT, {"id": "i2", "status": "error", "error": {"type": "ValueError", "message": "bad", "stack": "..."}})
seeds = {
    "typed_invoke": b"\x00" + invoke,
    "typed_result": b"\x04" + result + error,
    "typed_both_in_pieces": b"\x3c" + invoke + result + frame(8, {}),
    "typed_malformed_headers": b"\x00" + frame(RESULT, {"id": "x", "http": {"status": "x", "headers": [["a"], ["b", 1], "c", ["d", "e", "f"]]}})
                                + frame(RESULT, {"http": {"headers": {"a": "b", "c": 3}}}),
    "typed_not_object": b"\x00" + frame(INVOKE, b"[1,2]") + frame(RESULT, b'"text"'),
    "typed_duplicate_keys": b"\x00" + frame(RESULT, b'{"id":"a","id":"b","http":{"status":1},"http":{"status":2}}'),
    "typed_escapes": b"\x00" + frame(INVOKE, b'{"id":"\\u00e9\\ud83d\\ude00\\n","metadata":{"k\\"":"v\\\\"}}'),
    "typed_deep": b"\x00" + frame(RESULT, b'{"x":' + b"[" * 40 + b"]" * 40 + b"}"),
    "tree_frames": b"\x01" + frame(1, {"protocol": 1, "function": "f"}) + frame(2, {"pid": 1})
                   + frame(5, {"level": "info", "message": "hi"}) + frame(6, {"call": "enqueue", "args": {"queue": "q"}}, b"p")
                   + frame(7, {"ok": True}) + frame(9, {}) + frame(10, {"message": "boom"}),
    "tree_bad_type": b"\x01" + struct.pack(">IBI", 5, 42, 0),
    "tree_short_length": b"\x01" + struct.pack(">I", 3) + b"abc",
    "tree_header_overrun": b"\x01" + struct.pack(">IBI", 6, 8, 99) + b"{",
    "tree_huge_length": b"\x01" + struct.pack(">I", 0xFFFFFFFF),
    "tree_partial": b"\x05" + frame(8, {})[:-1],
    "tree_bad_json": b"\x01" + frame(8, b"{\"a\":}") ,
    "invoke_round_trip": b"\x02" + b"\n".join([b"id-1", b"q", b"tp", b"ev", b"/src", b"t", b"subj", b"msg", b"xx", b"k", b"v",
                                                b"GET", b"/p", b"a=b", b"h"]) + b"\npayload",
    "invoke_round_trip_binary": b"\x02" + b"\xff\xfe\n\n\x00\n\n\"\\\n\n\n\n\n\xc3\xa9\n\x01\nPUT\n/\n\n\n\x00\xff",
    "result_round_trip": b"\x03" + b"id\nxxxx\ncontent-type\ntext/plain\nx-a\n\"q\"\nbody\nwith lines",
    "result_round_trip_binary": b"\x03" + b"\xed\xa0\x80\n\n\xff\n\x00\n\n\n\x80",
}
for name, data in seeds.items():
    with open(os.path.join(here, name), "wb") as f:
        f.write(data)
