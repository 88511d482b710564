"""The litefer entry of an ONNX file's metadata, read and written on the serialized protobuf.

An ONNX file is a ``ModelProto``; its ``metadata_props`` (field 14) are key/value string pairs. Only
the top level is walked: the graph (field 7) is skipped by its length, so reading the card of a
5 MB model takes well under a millisecond and needs neither the ``onnx`` package nor torch, which
keeps the card reader in the torch-free recognition layer.
"""
from __future__ import annotations

PRODUCER_NAME, GRAPH, METADATA_PROPS = 2, 7, 14          # ModelProto field numbers (onnx.proto3)
KEY, VALUE = 1, 2                                        # StringStringEntryProto field numbers
VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5            # protobuf wire types


class ProtoError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ProtoError("truncated or overlong varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def fields(data: bytes | memoryview) -> list[tuple[int, int, int, bytes | None]]:
    """Top-level fields as (number, start, end, payload); payload only for length-delimited ones."""
    buf, i, out = memoryview(data), 0, []
    while i < len(buf):
        start = i
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        payload = None
        if wire == VARINT:
            _, i = _varint(buf, i)
        elif wire in (FIXED64, FIXED32):
            i += 8 if wire == FIXED64 else 4
        elif wire == LENGTH:
            size, i = _varint(buf, i)
            payload, i = buf[i:i + size], i + size
        else:
            raise ProtoError(f"unsupported wire type {wire}")
        if number == 0 or i > len(buf):
            raise ProtoError("truncated message" if i > len(buf) else "field number 0")
        out.append((number, start, i, payload))
    return out


def _entry(payload: memoryview) -> tuple[str, str]:
    parts = {n: bytes(p).decode("utf-8") for n, _, _, p in fields(payload) if p is not None}
    return parts.get(KEY, ""), parts.get(VALUE, "")


def read_metadata(data: bytes) -> dict[str, str]:
    """The ``metadata_props`` of serialized ONNX model bytes; ProtoError when they are not a model."""
    top = fields(data)
    if not any(n == GRAPH and p is not None for n, _, _, p in top):
        raise ProtoError("no graph: not an ONNX model")
    return dict(_entry(p) for n, _, _, p in top if n == METADATA_PROPS and p is not None)


def _length_field(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | LENGTH) + _encode_varint(len(payload)) + payload


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def with_metadata(data: bytes, key: str, value: str, producer: str | None = None) -> bytes:
    """Model bytes with ``key`` set to ``value`` in ``metadata_props`` (replacing that key) and,
    given ``producer``, the producer name replaced; everything else is kept byte for byte."""
    buf = memoryview(data)
    kept = []
    for number, start, end, payload in fields(data):
        if number == METADATA_PROPS and payload is not None and _entry(payload)[0] == key:
            continue
        if number == PRODUCER_NAME and producer is not None:
            continue
        kept.append(bytes(buf[start:end]))
    entry = _length_field(KEY, key.encode()) + _length_field(VALUE, value.encode())
    kept.append(_length_field(METADATA_PROPS, entry))
    if producer is not None:
        kept.append(_length_field(PRODUCER_NAME, producer.encode()))
    return b"".join(kept)


# GraphProto, NodeProto, AttributeProto, ValueInfoProto and TensorProto field numbers (onnx.proto3)
G_NODE, G_INITIALIZER, G_OUTPUT, G_VALUE_INFO = 1, 5, 12, 13
N_INPUT, N_OUTPUT, N_ATTRIBUTE = 1, 2, 5
A_GRAPH, A_GRAPHS = 6, 11
VALUE_INFO_NAME, TENSOR_NAME = 1, 8


def _strings(payload: memoryview, number: int) -> list[str]:
    return [bytes(p).decode("utf-8") for n, _, _, p in fields(payload) if n == number and p is not None]


def _graph(top: list) -> memoryview:
    for number, _, _, payload in top:
        if number == GRAPH and payload is not None:
            return payload
    raise ProtoError("no graph: not an ONNX model")


def graph_outputs(data: bytes) -> list[str]:
    """Names of the graph's outputs, in order."""
    return [_strings(p, VALUE_INFO_NAME)[0] for n, _, _, p in fields(_graph(fields(data)))
            if n == G_OUTPUT and p is not None]


def _has_subgraph(node: memoryview) -> bool:
    return any(n == N_ATTRIBUTE and p is not None and any(m in (A_GRAPH, A_GRAPHS) for m, *_ in fields(p))
               for n, _, _, p in fields(node))


def without_output(data: bytes, name: str) -> bytes:
    """Model bytes without graph output ``name`` and without the nodes, initializers and value infos
    only it needed. ONNX Runtime runs every node of a graph whatever outputs a call asks for, so a
    second output's branch costs time unless it is cut out. ``data`` itself when there is no such
    output; with control-flow subgraphs (whose outer-scope reads are implicit) only the output goes."""
    top = fields(data)
    graph = _graph(top)
    entries = fields(graph)
    outputs = [_strings(p, VALUE_INFO_NAME)[0] for n, _, _, p in entries if n == G_OUTPUT]
    if name not in outputs:
        return data
    nodes = {i: (_strings(p, N_INPUT), _strings(p, N_OUTPUT)) for i, (n, _, _, p) in enumerate(entries) if n == G_NODE}
    prune = not any(_has_subgraph(entries[i][3]) for i in nodes)
    needed, kept = {o for o in outputs if o != name}, set()
    for i in sorted(nodes, reverse=True):           # ONNX stores nodes in topological order
        inputs, outs = nodes[i]
        if not prune or needed & set(outs):
            kept.add(i)
            needed.update(inputs)
    alive = needed.union(*(nodes[i][1] for i in kept))
    buf, parts = memoryview(graph), []
    for i, (number, start, end, payload) in enumerate(entries):
        drop = ((number == G_OUTPUT and _strings(payload, VALUE_INFO_NAME)[0] == name)
                or (number == G_NODE and i not in kept)
                or (number == G_INITIALIZER and prune and _strings(payload, TENSOR_NAME)[0] not in alive)
                or (number == G_VALUE_INFO and prune and _strings(payload, VALUE_INFO_NAME)[0] not in alive))
        if not drop:
            parts.append(bytes(buf[start:end]))
    new_graph = _length_field(GRAPH, b"".join(parts))
    whole = memoryview(data)
    return b"".join(new_graph if number == GRAPH else bytes(whole[start:end]) for number, start, end, _ in top)
