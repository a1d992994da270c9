"""The protobuf wire format read by hand, for the tests that look inside a
SentencePiece model (sentencepiece_model.proto) without the protobuf
package: tests/tok/test_demo_tokenizer.py and tests/cli/test_text.py."""


def varint(b, i):
    """The varint at b[i]: (its value, the index just after it)."""
    v = s = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return v, i


def fields(b, i=0, end=None):
    """The fields of the message in b[i:end] (end: len(b)), in order, each
    as (number, wire type, start, payload, stop): the field is b[start:stop]
    (its key included), its value b[payload:stop] (for a length-delimited
    field, wire type 2, its bytes)."""
    end = len(b) if end is None else end
    while i < end:
        start = i
        key, i = varint(b, i)
        wire = key & 7
        if wire == 0:
            payload, i = i, varint(b, i)[1]
        elif wire == 1:
            payload, i = i, i + 8
        elif wire == 5:
            payload, i = i, i + 4
        elif wire == 2:
            n, payload = varint(b, i)
            i = payload + n
        else:
            raise ValueError(f"protobuf wire type {wire} (field {key >> 3}) at byte {start}")
        yield key >> 3, wire, start, payload, i
