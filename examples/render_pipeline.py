"""A three-stage pipeline, each stage in its own isolate:

    gather (network client only) -> parse (compute only) -> render (writes only to files
    the supervisor opened and handed over as descriptors)

Nothing starts until the supervisor is confined: it keeps the right to read the output
directory listing and to print, and nothing else. Run it against any http(s) URL serving
lines of ``name,value``::

    python examples/render_pipeline.py https://example.org/data.csv /tmp/out

``gather`` gets Landlock's ``dns()`` and ``ssl_certs()`` conveniences (resolver files and
CA bundles, read-only) plus TCP connect to the URL's port; ``parse`` gets nothing but
its two channels; ``render`` may write to the descriptors it receives and open nothing.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.request
from urllib.parse import urlsplit

import msgspec

from isolates.orchestrator import Supervisor, WorkerContext
from isolates.sandbox import Landlock, Networking, Policy, SystemIO


class Page(msgspec.Struct, forbid_unknown_fields=True):
    body: bytes


class Row(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    value: float


class Output(msgspec.Struct, forbid_unknown_fields=True):
    """Sent by the supervisor with one descriptor: where render writes a file."""

    name: str


def gather(ctx: WorkerContext, url: str) -> int:
    context = ssl.create_default_context() if url.startswith("https") else None
    with urllib.request.urlopen(url, timeout=10, context=context) as response:
        body = response.read()
    ctx.channel("pages").send(Page(body))
    return len(body)


def parse(ctx: WorkerContext) -> int:
    rows = ctx.channel("rows")
    count = 0
    for page in ctx.channel("pages"):
        for line in page.body.decode("utf-8", "replace").splitlines():
            name, _, value = line.partition(",")
            try:
                rows.send(Row(name.strip(), float(value)))
                count += 1
            except ValueError:
                continue  # untrusted input: skip what does not parse
    rows.close()
    return count


def render(ctx: WorkerContext) -> int:
    _output, fds = ctx.channel("outputs").recv_with_fds()
    rows = list(ctx.channel("rows"))
    width = max((len(r.name) for r in rows), default=0)
    top = max((r.value for r in rows), default=1.0) or 1.0
    lines = [f"{r.name:<{width}} {'#' * int(40 * r.value / top)} {r.value:g}\n" for r in rows]
    with os.fdopen(fds[0], "w") as f:  # the only file render can touch
        f.writelines(lines)
    return len(lines)


def build(url: str, outdir: str) -> Supervisor:
    port = urlsplit(url).port or (443 if url.startswith("https") else 80)
    sup = Supervisor(policy=Policy(
        SystemIO.nothing().allow_stdout().allow_stderr().allow_close(),
        Landlock().list(outdir),
    ))  # fmt: skip
    g = sup.add_worker("gather", gather, args=(url,), policy=Policy(
        Networking.nothing().allow_tcp_clients().allow_udp_clients(),
        Landlock().dns().ssl_certs().connect_tcp(port),
        SystemIO.nothing().allow_close(),
    ))  # fmt: skip
    p = sup.add_worker("parse", parse)
    r = sup.add_worker(
        "render", render, policy=Policy(SystemIO.nothing().allow_write().allow_close())
    )
    sup.connect(g, p, Page, name="pages")
    sup.connect(p, r, Row, name="rows")
    sup.connect(sup, r, Output, name="outputs")
    return sup


def main(url: str, outdir: str) -> int:
    os.makedirs(outdir, exist_ok=True)
    target = os.path.join(outdir, "chart.txt")
    sup = build(url, outdir)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)  # before confinement
    sup.start()  # workers confined, then the supervisor, then GO
    sup.channel("outputs").send(Output("chart.txt"), fds=[fd])
    os.close(fd)
    results = sup.join(timeout=60)
    print(f"gathered {results['gather']} bytes, parsed {results['parse']} rows, "
          f"rendered {results['render']} lines into {os.listdir(outdir)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} URL OUTDIR  (e.g. http://127.0.0.1:8000/data.csv out)")
    sys.exit(main(sys.argv[1], sys.argv[2]))
