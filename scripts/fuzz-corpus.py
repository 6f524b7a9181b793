#!/usr/bin/env python3
"""Gathers fuzz seeds from ../shared/fixtures (and this host's /proc) into <out>/<target>/, each in the
form its fuzz target reads (Sources/CNMFuzzTargets): pcaps become packet records, the recorded sock_diag
stream single datagrams and tcp_info attributes, JSON fixtures Docker and ECS bodies, image names and
addresses pulled out of them. Seeds already there are kept; names are content hashes, so running it
again adds nothing twice.

usage: fuzz-corpus.py FIXTURES OUT"""
import base64
import glob
import hashlib
import json
import os
import struct
import subprocess
import sys

# Larger seeds make libFuzzer mutate slowly (its -max_len follows the largest seed).
MAX_SEED = 16 * 1024


def main(fixtures, out):
    counts = {}

    def put(target, data):
        if isinstance(data, str):
            data = data.encode()
        if not data or len(data) > MAX_SEED:
            return
        directory = os.path.join(out, target)
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, "fixture-" + hashlib.sha1(data).hexdigest()[:16])
        if not os.path.exists(path):
            with open(path, "wb") as f:
                f.write(data)
            counts[target] = counts.get(target, 0) + 1

    def files(pattern):
        return sorted(glob.glob(os.path.join(fixtures, pattern), recursive=True))

    def read(path):
        with open(path, "rb") as f:
            return f.read()

    def unzstd(path):
        try:
            return subprocess.run(["zstd", "-dc", path], capture_output=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return b""

    # packet-flows: every packet of a pcap as `control, wire length, n, n bytes` (headers only).
    for path in files("netlink/pcap/*.pcap"):
        records = pcap_records(read(path))
        if not records:
            continue
        first_source = records[0][1][12:16] if records[0][1][:1] and records[0][1][0] >> 4 == 4 else None
        stream = b""
        previous = records[0][0]
        for time, packet, wire, loopback in records:
            tenths = max(0, min(63, int((time - previous) * 10)))
            previous = time
            if loopback:
                way = 2
            elif first_source is not None and packet[12:16] == first_source:
                way = 0
            else:
                way = 1
            captured = packet[:255]
            record = bytes([way | tenths << 2]) + struct.pack(">H", min(wire, 0xFFFF)) + bytes([len(captured)])
            stream += record + captured
        put("packet-flows", stream)

    # sock-diag and tcp-info: the recorded dump stream, message by message and a few at a time.
    stream = b"".join(unzstd(p) for p in files("netlink/m-lab-tcp-info/netlink-testdata.zst"))
    messages = split_netlink(stream)
    for size in (1, 3):
        for start in range(0, min(len(messages), 24 * size), size):
            put("sock-diag", b"".join(messages[start : start + size]))
    for message in messages[:24]:
        for kind, value in netlink_attributes(message[16 + 72 :]):
            if kind == 2:
                put("tcp-info", value)
    # m-lab's JSONL records: an inet_diag_msg and its attributes by type, rebuilt into a message.
    for path in files("netlink/m-lab-tcp-info/*.jsonl.zst"):
        for line in unzstd(path).splitlines()[:40]:
            try:
                record = json.loads(line)
                raw = base64.b64decode(record["RawIDM"])
                attributes = record.get("Attributes") or []
            except (ValueError, KeyError, TypeError):
                continue
            payload = raw
            for kind, value in enumerate(attributes):
                if value:
                    value = base64.b64decode(value)
                    payload += netlink_attribute(kind, value)
                    if kind == 2:
                        put("tcp-info", value)
            put("sock-diag", netlink_message(20, payload))
    for path in files("netlink/vishvananda/*.bin"):
        put("tcp-info", read(path))

    # docker-events: the example streams as sent, and with one compact object per line as the
    # daemon sends them.
    for path in files("docker/**/*events*"):
        data = read(path)
        put("docker-events", data)
        put("docker-events", b"\n".join(json.dumps(o).encode() for o in json_objects(data)) + b"\n")
    lines = [l for l in read(os.path.join(fixtures, "docker/docker-cli-docs/system_events.md")).splitlines()
             if l.startswith(b"{")] if os.path.exists(os.path.join(fixtures, "docker/docker-cli-docs")) else []
    put("docker-events", b"\n".join(lines))

    json_documents = []
    for path in files("docker/**/*.json") + files("ecs/**/*.json"):
        try:
            json_documents.append((path, json.loads(read(path))))
        except ValueError:
            continue
    for path, document in json_documents:
        target = "ecs-metadata" if "/ecs/" in path else "docker-container"
        put(target, read(path))
        for key, value in walk(document):
            if key in ("Image", "image", "from") and isinstance(value, str):
                put("image-reference", value)
            if key in ("IPAddress", "GlobalIPv6Address", "HostIp", "IP", "IPv4Addresses", "IPv6Addresses"):
                for text in value if isinstance(value, list) else [value]:
                    if isinstance(text, str):
                        put("ip-address", text)

    # cgroup: every /proc/<pid>/cgroup fixture, and this process's own.
    for path in files("proc/cgroup/**/*"):
        if os.path.isfile(path) and not path.endswith(".mountinfo"):
            put("cgroup", read(path))
    for path in files("proc/coroot/*cgroup*"):
        put("cgroup", read(path))
    put("cgroup", read_host("/proc/self/cgroup"))

    # namespace-addresses: the fixtures have no fib_trie or if_inet6, so this host's.
    for name in ("fib_trie", "if_inet6"):
        put("namespace-addresses", read_host("/proc/self/net/" + name))

    # procfs-links: the link targets the fixtures list, this process's own, and its stat line.
    for path in files("proc/**/*symlinks.txt"):
        for line in read(path).splitlines():
            for part in line.split(b"; "):
                if b"-> " in part:
                    put("procfs-links", part.split(b"-> ", 1)[1].strip())
    for link in glob.glob("/proc/self/fd/*") + glob.glob("/proc/self/ns/*"):
        try:
            put("procfs-links", os.readlink(link))
        except OSError:
            pass
    put("procfs-links", read_host("/proc/self/stat"))

    # configuration: the environments of this repository's ECS task definitions.
    repository = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for path in sorted(glob.glob(os.path.join(repository, "ecs/*.json"))):
        try:
            document = json.loads(read(path))
        except ValueError:
            continue
        for key, value in walk(document):
            if key == "environment" and isinstance(value, list):
                pairs = [f"{e.get('name')}={e.get('value')}" for e in value if isinstance(e, dict)]
                put("configuration", "\n".join(pairs) + "\n")

    for target in sorted(counts):
        print(f"fuzz-corpus: {target}: {counts[target]} new seeds from fixtures")


def read_host(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def pcap_records(data):
    """(time, network-layer bytes, wire length from the network layer, is loopback) of a classic pcap."""
    if len(data) < 24:
        return []
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic == 0xA1B2C3D4 else ">" if magic == 0xD4C3B2A1 else None
    if endian is None:
        return []
    link = struct.unpack(endian + "I", data[20:24])[0]
    header = {0: 4, 1: 14}.get(link)
    if header is None:
        return []
    out = []
    offset = 24
    while offset + 16 <= len(data):
        seconds, micros, captured, original = struct.unpack(endian + "IIII", data[offset : offset + 16])
        packet = data[offset + 16 + header : offset + 16 + captured]
        out.append((seconds + micros / 1e6, packet, max(0, original - header), link == 0))
        offset += 16 + captured
    return out


def split_netlink(stream):
    messages = []
    offset = 0
    while offset + 16 <= len(stream):
        length = struct.unpack("<I", stream[offset : offset + 4])[0]
        if length < 16 or offset + length > len(stream):
            break
        messages.append(stream[offset : offset + length])
        offset += (length + 3) & ~3
    return messages


def netlink_attributes(payload):
    offset = 0
    while offset + 4 <= len(payload):
        length, kind = struct.unpack("<HH", payload[offset : offset + 4])
        if length < 4 or offset + length > len(payload):
            return
        yield kind & 0x3FFF, payload[offset + 4 : offset + length]
        offset += (length + 3) & ~3


def netlink_attribute(kind, value):
    data = struct.pack("<HH", 4 + len(value), kind) + value
    return data + bytes(-len(data) % 4)


def netlink_message(kind, payload, sequence=0, port=0):
    data = struct.pack("<IHHII", 16 + len(payload), kind, 2, sequence, port) + payload
    return data + bytes(-len(data) % 4)


def json_objects(data):
    """The JSON values of a concatenated stream, pretty-printed or not."""
    text = data.decode("utf-8", "replace")
    decoder = json.JSONDecoder()
    index = 0
    while True:
        while index < len(text) and text[index].isspace():
            index += 1
        if index >= len(text):
            return
        try:
            value, index = decoder.raw_decode(text, index)
        except ValueError:
            return
        yield value


def walk(value):
    """(key, value) of every member of every object in a JSON document."""
    if isinstance(value, dict):
        for key, member in value.items():
            yield key, member
            yield from walk(member)
    elif isinstance(value, list):
        for member in value:
            yield from walk(member)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
