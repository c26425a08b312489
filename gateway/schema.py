"""JSON request schema for the body guard, derived from the descriptor set.

Envoy's gRPC-JSON transcoder drops JSON fields the request message does not
define (grpc-httpjson-transcoding sets ``ignore_unknown_fields`` and Envoy
offers no switch), so a typo such as ``"instance"`` would silently change a
request's meaning. A small Lua filter in front of the transcoder walks each REST
body against the tables built here and answers 400 on the first unknown field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

__all__ = ["BodyRoute", "body_routes", "lua_schema", "message_fields"]

# Field specs in the Lua tables: false = scalar, "*" = free-form JSON (Struct, Value, ...),
# "<message>" = nested message, {map = spec} = map whose values follow spec.
FREE_FORM_PACKAGE = "google.protobuf"
# A body bound to this message is passed through as it came.
RAW_BODY = "google.api.HttpBody"


@dataclass(frozen=True)
class BodyRoute:
    verb: str
    pattern: str  # Lua pattern of the REST path
    # request message, fully qualified without the leading dot; "" for a body passed
    # through as it came (google.api.HttpBody), which the guard only waits for
    message: str


def _messages(fds: descriptor_pb2.FileDescriptorSet) -> dict[str, descriptor_pb2.DescriptorProto]:
    found: dict[str, descriptor_pb2.DescriptorProto] = {}

    def visit(prefix: str, message: descriptor_pb2.DescriptorProto) -> None:
        name = f"{prefix}.{message.name}" if prefix else message.name
        found[name] = message
        for nested in message.nested_type:
            visit(name, nested)

    for file in fds.file:
        for message in file.message_type:
            visit(file.package, message)
    return found


def _lua_pattern(template: str) -> str:
    """``/v2/models/{model_name}/infer`` -> ``^/v2/models/[^/]+/infer$``."""
    parts = re.split(r"(\{[^}]*\})", template)
    out = []
    for part in parts:
        if part.startswith("{"):
            out.append("[^/]+")
        else:
            out.append(re.sub(r"([^A-Za-z0-9/_])", r"%\1", part))
    return "^" + "".join(out) + "$"


def _raw_body(
    messages: dict[str, descriptor_pb2.DescriptorProto], input_type: str, body: str
) -> bool:
    """Whether a binding's body goes to the server as it came (a ``google.api.HttpBody``
    field): the server reads it, not the transcoder."""
    if body == "*":
        return input_type == RAW_BODY
    fields = {f.name: f for f in messages[input_type].field}
    target = fields.get(body)
    return target is not None and target.type_name.lstrip(".") == RAW_BODY


def body_routes(descriptor_set: bytes, services: list[str]) -> list[BodyRoute]:
    """REST bindings of ``services`` that carry a body."""
    fds = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set)
    messages = _messages(fds)
    routes = []
    for file in fds.file:
        for service in file.service:
            if f"{file.package}.{service.name}" not in services:
                continue
            for method in service.method:
                rule = method.options.Extensions[annotations_pb2.http]
                for binding in [rule, *rule.additional_bindings]:
                    verb = binding.WhichOneof("pattern")
                    input_type = method.input_type.lstrip(".")
                    if verb and verb != "custom" and binding.body:
                        raw = _raw_body(messages, input_type, binding.body)
                        routes.append(
                            BodyRoute(
                                verb.upper(),
                                _lua_pattern(getattr(binding, verb)),
                                "" if raw else input_type,
                            )
                        )
    return routes


def message_fields(descriptor_set: bytes) -> dict[str, dict[str, object]]:
    """Every message's accepted JSON keys (proto and lowerCamel names) and their specs."""
    fds = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set)
    messages = _messages(fds)
    fields: dict[str, dict[str, object]] = {}
    for name, message in messages.items():
        if name.startswith(FREE_FORM_PACKAGE + ".") or message.options.map_entry:
            continue
        specs: dict[str, object] = {}
        for field in message.field:
            spec: object = False
            if field.type == descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE:
                target = field.type_name.lstrip(".")
                entry = messages[target]
                if entry.options.map_entry:
                    value = entry.field[1]
                    inner = value.type_name.lstrip(".") if value.type_name else ""
                    spec = {"map": _spec_of(inner)}
                else:
                    spec = _spec_of(target)
            specs[field.name] = spec
            specs[field.json_name] = spec
        fields[name] = specs
    return fields


def _spec_of(message: str) -> object:
    if not message:
        return False
    return "*" if message.startswith(FREE_FORM_PACKAGE + ".") else message


def _reachable(fields: dict[str, dict[str, object]], roots: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name not in fields:
            continue
        seen.add(name)
        for spec in fields[name].values():
            target = spec["map"] if isinstance(spec, dict) else spec
            if isinstance(target, str) and target != "*":
                todo.append(target)
    return seen


def _lua(value: object) -> str:
    if value is False:
        return "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "{map = " + _lua(value["map"]) + "}"
    raise TypeError(value)


def lua_schema(descriptor_set: bytes, services: list[str]) -> str:
    """Lua source defining ``ROUTES`` and ``MESSAGES`` for ``json_guard.lua``."""
    routes = body_routes(descriptor_set, services)
    lines = ["ROUTES = {"]
    for route in routes:
        lines.append(
            f"  {{verb = {_lua(route.verb)}, pattern = {_lua(route.pattern)}, "
            f"message = {_lua(route.message or False)}}},"
        )
    lines.append("}")
    lines.append("MESSAGES = {")
    fields = message_fields(descriptor_set)
    for name in sorted(_reachable(fields, [r.message for r in routes])):
        specs = fields[name]
        entries = ", ".join(f"[{_lua(k)}] = {_lua(v)}" for k, v in sorted(specs.items()))
        lines.append(f"  [{_lua(name)}] = {{{entries}}},")
    lines.append("}")
    return "\n".join(lines) + "\n"
