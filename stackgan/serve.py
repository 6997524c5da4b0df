"""``stackgan serve``: a web page and a JSON API to try a trained model (FastAPI + uvicorn).

The model is loaded once. Generation runs on one worker thread, one request after another, so
concurrent users queue instead of oversubscribing the CPU; at most ``max_queue`` requests wait,
more are refused with 429 (Too Many Requests). A request whose client disconnects while it waits
is dropped before it is computed. Nothing from a request touches the file system: images go
back as base64 PNGs inside the JSON answer.

Limits: request bodies over ``MAX_BODY`` bytes get 413; invalid ones 422, whose answer repeats at
most a short prefix of the input. Bound to a loopback address, the server answers only requests
whose ``Host`` header is a loopback name (127.0.0.1, localhost, [::1]; add others with
``allowed_hosts``), so a web page on another site cannot drive it through DNS rebinding.

    POST /api/generate  {"text": "...", "n": 4, "seed": 0, "vary": "both"}
    GET  /healthz       200 when the model is loaded; queue counters
    GET  /docs          the OpenAPI page FastAPI makes
"""
from __future__ import annotations

import asyncio
import base64
import html
import io
import ipaddress
import math
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, Optional

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field, field_validator
from starlette.middleware.trustedhost import TrustedHostMiddleware

from .text.base import clean_text
from .viz import to_pil

MAX_CHARS = 300
MAX_N = 16
MAX_SEED = 2**31 - 1
MAX_BODY = 64 * 1024  # bytes of a request body; a valid one is under 1 KB
ECHO_CHARS = 40  # at most this much of an invalid input is repeated in the 422 answer
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "[::1]"]


class GenerateRequest(BaseModel):
    text: str = Field(..., description=f"one sentence, 1 to {MAX_CHARS} characters")
    n: int = Field(4, ge=1, le=MAX_N, description="images to draw")
    seed: Optional[int] = Field(None, ge=0, le=MAX_SEED, description="image i uses seed + i; none: a random seed")
    vary: Literal["both", "ca", "z"] = Field(
        "both", description="both: each image its own noise z and CA sample; ca: z fixed, only the Conditioning "
                            "Augmentation sample varies; z: the CA sample fixed, only z varies")

    @field_validator("text")
    @classmethod
    def _text(cls, v: str) -> str:
        v = clean_text(v)
        if not v:
            raise ValueError("the sentence is empty")
        if len(v) > MAX_CHARS:
            raise ValueError(f"the sentence has {len(v)} characters; at most {MAX_CHARS}")
        return v


def png_base64(image: torch.Tensor) -> str:
    """uint8 ``[3, H, W]`` -> ``data:image/png;base64,...``."""
    buf = io.BytesIO()
    to_pil(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_host_names(host: str, extra: list[str] | None = None) -> list[str]:
    """The Host headers served: loopback names (and ``extra``) when bound to loopback, else
    ``extra`` if given, else any."""
    extra = list(extra or [])
    if is_loopback(host):
        return LOOPBACK_HOSTS + extra
    return extra or ["*"]


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes``, announced or streamed."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self._refuse(scope, receive, send)
        seen, started, refused = 0, False, False

        async def counted():
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:  # answer now; the app sees the client as gone
                    refused = True
                    if not started:
                        await self._refuse(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def tracked(message):
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)
        try:
            await self.app(scope, counted, tracked)
        except Exception:
            if not refused:
                raise

    async def _refuse(self, scope, receive, send):
        await JSONResponse({"detail": f"the request body is over {self.max_bytes:,} bytes"}, 413)(scope, receive, send)


def _preview(value):
    """A JSON-safe, short stand-in for an invalid input value."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= ECHO_CHARS else text[:ECHO_CHARS] + f"... ({len(text):,} characters)"


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with each error's place and message and at most a short prefix of the input (FastAPI's
    own answer repeats the whole input, and fails with a 500 on NaN or infinity)."""
    detail = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))[:200], "type": e.get("type", ""),
               "input": _preview(e.get("input"))} for e in exc.errors()]
    return JSONResponse({"detail": detail}, 422)


async def _client_gone(request: Request) -> None:
    """Returns once the client has disconnected (the body is read by then: the next message is
    the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.05)


def create_app(pipe, *, examples: list[str], max_queue: int = 64, name: str = "model", host: str = "127.0.0.1",
               allowed_hosts: list[str] | None = None) -> FastAPI:
    """The app around a loaded ``StackGANPipeline`` (see the module doc for ``host`` / ``allowed_hosts``)."""
    app = FastAPI(title="StackGAN", description="Type a sentence, get Stage-I (64x64) and Stage-II (256x256) images.")
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_host_names(host, allowed_hosts))
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY)  # added last: runs first
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stackgan-generate")
    waiting = threading.BoundedSemaphore(max_queue)
    counts = {"served": 0, "refused_busy": 0, "dropped_disconnected": 0}
    counts_lock = threading.Lock()

    def count(key: str) -> None:
        with counts_lock:
            counts[key] += 1

    def draw(req: GenerateRequest, seed: int, gone: threading.Event) -> dict | None:
        if gone.is_set():  # the client left while this waited: nobody would see the images
            count("dropped_disconnected")
            return None
        t = time.monotonic()
        emb = pipe.embed([req.text]).expand(req.n, -1)  # [n, D]
        z, eps1, eps2 = pipe.noise(list(range(seed, seed + req.n)))  # [n, z], [n, cond] x 2
        if req.vary == "ca":
            z = z[:1].expand_as(z)
        elif req.vary == "z":
            eps1, eps2 = eps1[:1].expand_as(eps1), eps2[:1].expand_as(eps2)
        out = pipe.draw(emb, z, eps1, eps2, pipe.stage)
        images = [{stage: png_base64(imgs[i]) for stage, imgs in out.stages.items()} for i in range(req.n)]
        count("served")
        return {"images": images, "generate_ms": (time.monotonic() - t) * 1000}

    @app.get("/healthz")
    def healthz() -> dict:
        with counts_lock:
            queue = {"max": max_queue, **counts}
        return {"status": "ok", "model": name, "stages": pipe.stage, "queue": queue}

    @app.post("/api/generate")
    async def generate(req: GenerateRequest, request: Request):
        """Images for one sentence: ``images[i].stage1`` / ``.stage2`` are base64 PNG data URLs."""
        if not waiting.acquire(blocking=False):
            count("refused_busy")
            raise HTTPException(429, f"the server is busy ({max_queue} requests waiting); try again shortly")
        t = time.monotonic()
        seed = req.seed if req.seed is not None else secrets.randbelow(MAX_SEED - MAX_N)
        gone = threading.Event()
        job = worker.submit(draw, req, seed, gone)
        result, watch = asyncio.wrap_future(job), asyncio.ensure_future(_client_gone(request))
        try:
            await asyncio.wait({result, watch}, return_when=asyncio.FIRST_COMPLETED)
            if not result.done():  # the client disconnected first
                gone.set()
                if job.cancel():  # not started: never will be
                    count("dropped_disconnected")
                return JSONResponse({"detail": "the client disconnected"}, 499)
            res = result.result()
        finally:
            watch.cancel()
            waiting.release()
        total = (time.monotonic() - t) * 1000
        return {"text": req.text, "seed": seed, "n": req.n, "vary": req.vary, "images": res["images"],
                "timings_ms": {"generate": round(res["generate_ms"], 1), "total": round(total, 1),
                               "queue": round(total - res["generate_ms"], 1)}}

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.replace("__EXAMPLES__", "".join(f"<li><a href='#' class='ex'>{html.escape(e)}</a></li>" for e in examples))

    return app


def serve(checkpoint: str | Path, host: str = "127.0.0.1", port: int = 8000, max_queue: int = 64,
          device: str | None = None, examples_file: str | Path | None = None,
          allowed_hosts: list[str] | None = None) -> None:
    import uvicorn

    from .text.captions import read_captions_file
    from .pipeline import StackGANPipeline
    from .utils import resolve_device

    examples = read_captions_file(examples_file)[:12] if examples_file else EXAMPLES_SHAPES
    pipe = StackGANPipeline.load(checkpoint).to(resolve_device(device))
    pipe.embed(["warm up"])  # load the text encoder now, not on the first request
    app = create_app(pipe, examples=examples, max_queue=max_queue, name=str(checkpoint), host=host,
                     allowed_hosts=allowed_hosts)
    print(f"serving {checkpoint} on http://{host}:{port}/ (API: POST /api/generate, docs: /docs)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


EXAMPLES_SHAPES = [  # the default examples: sentences as the Shapes data set words them
    "a drawing of a large pink striped triangle on a beige background in the upper right",
    "a tiny striped orange circle, in the top left, against a gray backdrop",
    "a big plain purple triangle over a black backdrop in the bottom right corner",
    "a large green square with dots in the middle on a white background",
]

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>StackGAN</title>
<style>
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}
input[type=text]{width:60%} .row{display:flex;gap:12px;align-items:flex-start;margin:8px 0}
.row img{image-rendering:pixelated;border:1px solid #ccc} #status{color:#555} .error{color:#b00}
</style></head><body>
<h1>StackGAN</h1>
<p>Type a sentence: Stage I draws a 64x64 image, Stage II a 256x256 one from it and the same text.</p>
<form id="f"><input type="text" id="text" maxlength="300" placeholder="a sentence" required>
 images <input type="number" id="n" min="1" max="16" value="4" style="width:4em">
 seed <input type="number" id="seed" min="0" placeholder="random" style="width:8em">
 <button type="submit" id="go">Generate</button></form>
<p><button id="vary-ca" type="button">Vary the Conditioning Augmentation sample</button>
 <button id="vary-z" type="button">Vary the noise</button> (the other one stays fixed)</p>
<p>Examples:</p><ul id="examples">__EXAMPLES__</ul>
<p id="status"></p><div id="out"></div>
<script>
const $ = id => document.getElementById(id);
async function run(vary) {
  const body = {text: $("text").value, n: parseInt($("n").value || "4"), vary: vary};
  if ($("seed").value !== "") body.seed = parseInt($("seed").value);
  $("status").className = ""; $("status").textContent = "drawing...";
  const r = await fetch("/api/generate", {method: "POST", headers: {"Content-Type": "application/json"},
                                          body: JSON.stringify(body)});
  const j = await r.json();
  if (!r.ok) {
    $("status").className = "error";
    $("status").textContent = typeof j.detail === "string" ? j.detail : j.detail.map(d => d.msg).join("; ");
    return;
  }
  $("seed").value = j.seed;
  $("status").textContent = `seed ${j.seed}, ${j.timings_ms.total.toFixed(0)} ms (${j.vary})`;
  $("out").innerHTML = "";
  for (const im of j.images) {
    const row = document.createElement("div"); row.className = "row";
    for (const [stage, size] of [["stage1", 128], ["stage2", 256]]) {
      if (!im[stage]) continue;
      const img = document.createElement("img"); img.src = im[stage]; img.width = size; img.height = size;
      img.alt = stage; img.className = stage; row.appendChild(img);
    }
    $("out").appendChild(row);
  }
}
$("f").addEventListener("submit", e => { e.preventDefault(); run("both"); });
$("vary-ca").addEventListener("click", () => run("ca"));
$("vary-z").addEventListener("click", () => run("z"));
for (const a of document.querySelectorAll("a.ex"))
  a.addEventListener("click", e => { e.preventDefault(); $("text").value = a.textContent; });
</script></body></html>
"""
