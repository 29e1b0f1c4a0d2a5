#!/usr/bin/env python3
"""Regenerates the golden Envelope encodings in this directory.

The bytes are produced by Google's Python protobuf runtime (an implementation
independent of prost) from envelope.proto, which is transcribed from SPEC §9.
crates/vellum-core/tests/golden_envelope.rs decodes every <case>.bin with
vellum_core::Envelope and re-encodes it, asserting byte-for-byte equality.

How to run (from anywhere; output goes next to this script):

    python3 -m venv /tmp/pb-venv
    /tmp/pb-venv/bin/pip install protobuf==7.36.2 grpcio-tools==1.85.1
    /tmp/pb-venv/bin/python crates/vellum-core/testdata/envelope/generate.py

Last run with: Python 3.11.7, protobuf 7.36.2 (upb backend),
grpcio-tools 1.85.1 (bundled libprotoc 35.1).

The script compiles envelope.proto with `python -m grpc_tools.protoc` into a
temporary directory, imports the generated module, builds each case, writes
<case>.bin and rewrites cases.txt (a human-readable manifest). The output is
deterministic: rerunning it must leave `git status` clean.
"""

import hashlib
import importlib
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = "envelope.proto"

LARGE_DATA_LEN = 100 * 1024


def large_data():
    """100 KiB of deterministic bytes: byte i is (i * 31 + 7) mod 256.

    The Rust test rebuilds the same sequence with the same formula.
    """
    return bytes((i * 31 + 7) % 256 for i in range(LARGE_DATA_LEN))


def compile_proto(out_dir):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "--proto_path=" + HERE,
            "--python_out=" + out_dir,
            os.path.join(HERE, PROTO),
        ],
        check=True,
    )
    sys.path.insert(0, out_dir)
    return importlib.import_module("envelope_pb2")


def build_cases(pb):
    """Returns a list of (name, description, Envelope)."""
    cases = []

    def add(name, description, env):
        cases.append((name, description, env))

    # Every one of the 13 fields set; unicode text, binary data, RFC 3339 ns times.
    env = pb.Envelope()
    env.message_id = "0d5a3c1e-6f1b-4b7e-9c2a-8e4f1a2b3c4d"
    env.causation_id = "7b2f9e10-3a4c-4d5e-8f60-718293a4b5c6"
    env.correlation_id = "c0ffee00-0000-4000-8000-000000000001"
    env.source_application.name = "bank-app ✓"
    env.source_application.key = "b1a2c3d4-0000-4000-8000-00000000aaaa"
    env.source_handler.name = "account-aggregate"
    env.source_handler.key = "a9b8c7d6-0000-4000-8000-00000000bbbb"
    env.source_instance_id = "account-Ünïcødé-42"
    env.created_at = "2024-02-29T23:59:59.123456789Z"
    env.scheduled_for = "2024-03-01T00:00:00.000000001+01:00"
    env.description = "Überweisung über 5 € — 日本語 🚀"
    env.portable_name = "bank.AccountOpened"
    env.media_type = "application/json; type=bank.AccountOpened"
    env.data = b"\x00\x01\x7f\x80\xfe\xff" + '{"name":"Zoë"}'.encode() + b"\x00\xff"
    env.source_site.name = "eu-west-1 🌍"
    env.source_site.key = "517e0000-0000-4000-8000-00000000cccc"
    add(
        "full",
        "all 13 fields set; unicode strings (incl. 4-byte UTF-8), data with "
        "0x00/0xff bytes, RFC 3339 ns created_at and scheduled_for",
        env,
    )

    # A plain event from a handler at a named site.
    env = pb.Envelope()
    env.message_id = "msg-1"
    env.causation_id = "msg-0"
    env.correlation_id = "msg-0"
    env.source_site.name = "site-a"
    env.source_site.key = "site-key-a"
    env.source_application.name = "app"
    env.source_application.key = "app-key"
    env.source_handler.name = "handler"
    env.source_handler.key = "handler-key"
    env.created_at = "2023-01-02T03:04:05.000000006Z"
    env.portable_name = "Evt"
    env.media_type = "application/json; type=Evt"
    env.data = b'{"x":1}'
    add(
        "source_site",
        "source_site (tag 13, declared before tag 4 in the .proto) present on "
        "an otherwise ordinary event",
        env,
    )

    # Absent vs. present-but-empty source_handler: identical except for tag 5.
    def root_command():
        env = pb.Envelope()
        env.message_id = "cmd-1"
        env.causation_id = "cmd-1"
        env.correlation_id = "cmd-1"
        env.source_application.name = "app"
        env.source_application.key = "app-key"
        env.created_at = "2023-01-02T03:04:05.123456789Z"
        env.portable_name = "Cmd"
        env.media_type = "application/json; type=Cmd"
        env.data = b"{}"
        return env

    env = root_command()
    assert not env.HasField("source_handler")
    add("handler_absent", "source_handler not set (field 5 absent on the wire)", env)

    env = root_command()
    env.source_handler.SetInParent()
    assert env.HasField("source_handler")
    add(
        "handler_empty",
        "source_handler set to an empty Identity (field 5 on the wire with "
        "length 0); otherwise identical to handler_absent",
        env,
    )

    add("default", "all-default Envelope: encodes to zero bytes", pb.Envelope())

    env = pb.Envelope()
    env.message_id = "only-id"
    for field in (
        "causation_id",
        "correlation_id",
        "source_instance_id",
        "created_at",
        "scheduled_for",
        "description",
        "portable_name",
        "media_type",
    ):
        setattr(env, field, "")
    env.data = b""
    add(
        "empty_strings",
        "message_id set; every other scalar explicitly set to empty (proto3 "
        "implicit presence: not emitted); no identities",
        env,
    )

    env = pb.Envelope()
    env.message_id = "big-1"
    env.causation_id = "big-1"
    env.correlation_id = "big-1"
    env.source_application.name = "app"
    env.source_application.key = "app-key"
    env.created_at = "2023-06-07T08:09:10.111111111Z"
    env.portable_name = "Blob"
    env.media_type = "application/octet-stream; type=Blob"
    env.data = large_data()
    add(
        "large_data",
        "data is %d bytes, byte i = (i * 31 + 7) mod 256 (3-byte length varint)"
        % LARGE_DATA_LEN,
        env,
    )

    return cases


def main():
    import google.protobuf
    from google.protobuf.internal import api_implementation

    with tempfile.TemporaryDirectory() as tmp:
        pb = compile_proto(tmp)
        cases = build_cases(pb)

        lines = [
            "# Golden Envelope encodings; generated by generate.py, do not edit.",
            "# python %s, protobuf %s (%s backend)"
            % (
                sys.version.split()[0],
                google.protobuf.__version__,
                api_implementation.Type(),
            ),
            "# <case>.bin  <length>  <sha256>",
            "#   <description>",
            "#   hex: <bytes> (for cases up to 256 bytes)",
            "",
        ]
        for name, description, env in cases:
            data = env.SerializeToString()
            # Sanity: the runtime reads its own output back identically.
            again = pb.Envelope.FromString(data)
            assert again == env and again.SerializeToString() == data, name
            with open(os.path.join(HERE, name + ".bin"), "wb") as f:
                f.write(data)
            lines.append(
                "%s.bin  %d  %s" % (name, len(data), hashlib.sha256(data).hexdigest())
            )
            lines.append("  " + description)
            if len(data) <= 256:
                lines.append("  hex: " + (data.hex() or "(empty)"))
            lines.append("")

    with open(os.path.join(HERE, "cases.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    print("wrote %d cases to %s" % (len(cases), HERE))


if __name__ == "__main__":
    main()
