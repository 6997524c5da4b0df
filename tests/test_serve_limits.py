"""The server's limits (issue 18), on the real app and HTTP server with a stand-in model whose
drawing waits for the test: body size, non-finite numbers, short error echoes, the Host check,
and requests whose client left being dropped before they are computed."""
import json
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
import torch

from stackgan.pipeline import GenerationOutput
from stackgan.serve import create_app


class GatedPipe:
    """A model stand-in: ``draw`` blocks until ``gate`` is set and counts the images it drew."""
    stage = 1

    def __init__(self):
        self.gate, self.entered, self.drawn = threading.Event(), threading.Event(), []

    def embed(self, texts):
        return torch.zeros(len(texts), 4)  # [N, D]

    def noise(self, seeds):
        n = len(seeds)
        return torch.zeros(n, 2), torch.zeros(n, 2), torch.zeros(n, 2)

    def draw(self, emb, z, eps1, eps2, stage):
        self.entered.set()
        assert self.gate.wait(120), "the test never opened the gate"
        self.drawn.append(len(emb))
        return GenerationOutput(torch.zeros(len(emb), 3, 8, 8, dtype=torch.uint8))


@pytest.fixture(scope="module")
def stub():
    import uvicorn
    pipe = GatedPipe()
    app = create_app(pipe, examples=[], max_queue=8, host="127.0.0.1", allowed_hosts=["proxy.example"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield pipe, port
    pipe.gate.set()
    server.should_exit = True
    thread.join(30)


def raw(port: int, request: bytes, read: bool = True) -> tuple[int, bytes]:
    """Send bytes over HTTP/1.1; status code and body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(request)
        data = b""
        while read and (chunk := s.recv(65536)):
            data += chunk
    if not read:
        return 0, b""
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def post(port: int, body: bytes, host: str = "127.0.0.1") -> tuple[int, bytes]:
    return raw(port, b"POST /api/generate HTTP/1.1\r\nHost: " + host.encode() + b"\r\nContent-Type: application/json"
               b"\r\nConnection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def healthz(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as r:
        return json.loads(r.read())


def test_bodies_over_64_kb_get_413_announced_or_streamed(stub):
    _, port = stub
    status, body = post(port, json.dumps({"text": "a red circle", "pad": "x" * 70_000}).encode())
    assert status == 413 and "over 65,536 bytes" in json.loads(body)["detail"]
    chunk = b"x" * 70_000  # no Content-Length: counted as it arrives
    status, body = raw(port, b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                       b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + f"{len(chunk):x}\r\n".encode()
                       + chunk + b"\r\n0\r\n\r\n")
    assert status == 413


@pytest.mark.parametrize("body", [b'{"text": "a", "seed": 1e400}', b'{"text": "a", "n": NaN}',
                                  b'{"text": "a", "seed": -Infinity}', b'{"text": "a", "n": 1e308}'])
def test_non_finite_and_overflowing_numbers_get_422(stub, body):
    status, answer = post(stub[1], body)
    assert status == 422 and json.loads(answer)["detail"][0]["loc"][-1] in ("seed", "n")


def test_an_invalid_input_is_echoed_as_a_short_prefix_only(stub):
    status, answer = post(stub[1], json.dumps({"text": "b" * 50_000}).encode())
    detail = json.loads(answer)["detail"]
    assert status == 422 and "at most 300" in detail[0]["msg"]
    assert len(answer) < 1000 and detail[0]["input"].startswith("b" * 40 + "... (50,000 characters)")


def test_only_loopback_or_allowed_host_headers_are_served(stub):
    _, port = stub
    get = b"GET /healthz HTTP/1.1\r\nConnection: close\r\nHost: "
    assert raw(port, get + b"evil.example.com\r\n\r\n")[0] == 400  # DNS rebinding: a foreign name
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "[::1]", "proxy.example"):
        assert raw(port, get + host.encode() + b"\r\n\r\n")[0] == 200, host


def test_a_request_whose_client_left_is_dropped_before_it_is_computed(stub):
    pipe, port = stub
    pipe.gate.clear()
    pipe.entered.clear()
    before = healthz(port)["queue"]
    body = json.dumps({"text": "a red circle", "n": 16, "seed": 1}).encode()
    first = threading.Thread(target=post, args=(port, json.dumps({"text": "first", "n": 2, "seed": 0}).encode()))
    first.start()  # holds the worker until the gate opens
    assert pipe.entered.wait(60)
    for _ in range(5):  # clients that send a request and hang up while it waits
        raw(port, b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body, read=False)
    deadline = time.monotonic() + 60
    while healthz(port)["queue"]["dropped_disconnected"] - before["dropped_disconnected"] < 5:
        assert time.monotonic() < deadline, healthz(port)
        time.sleep(0.1)
    pipe.gate.set()
    first.join(60)
    status, answer = post(port, json.dumps({"text": "next", "n": 3, "seed": 2}).encode())
    assert status == 200 and len(json.loads(answer)["images"]) == 3
    assert pipe.drawn[-2:] == [2, 3]  # the first request and the next one; none of the 16-image ones
    assert 16 not in pipe.drawn
    assert healthz(port)["queue"]["served"] - before["served"] == 2
