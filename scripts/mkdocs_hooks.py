"""The documentation site's build hooks (``mkdocs.yml``: ``hooks``), so that no text lives in two places:

- README.md becomes the home page, REPRODUCTION.md and BENCHMARKS.md pages of their own, read from the repository
  root as they are; every relative link of every page is resolved in the *repository* (as on the repository page)
  and pointed at the page or file that the site holds for it, and the repository files that pages link to or show
  (the PNGs under ``results/``) are published beside them. A link to a file that does not exist stays as written,
  and the strict build fails on it.
- The gallery is drawn from the registries at build time: every registered STE (an installed package's through its
  entry points too), forward quantizer and weight quantizer gets its plot, properties, table or formula, where it is
  defined and the string to use it. A new built-in appears with no docs edit.

``mkdocs build --strict`` (run by ``scripts/test.sh``) turns every warning (a broken link or anchor, a docstring
that does not render) into a failure.
"""

from __future__ import annotations

import inspect
import io
import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
# repository file -> its page in the site (the docs/ folder is the site's root)
PAGES = {"README.md": "index.md", "REPRODUCTION.md": "reproduction.md", "BENCHMARKS.md": "benchmarks.md"}
LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")
_site: dict[str, str] = {}  # repository path -> site path, for every file the site holds


def _repo_path(src_uri: str) -> str:
    inverse = {v: k for k, v in PAGES.items()}
    return inverse.get(src_uri, src_uri if src_uri.startswith("repo/") else f"docs/{src_uri}").removeprefix("repo/")


def _targets(text: str, repo_page: str) -> list[str]:
    """The repository paths that the relative links of ``text`` (a page at ``repo_page``) point at."""
    out = []
    for _, target, _ in LINK.findall(text):
        path = target.split("#")[0]
        if path and "://" not in path and not path.startswith("mailto:"):
            out.append(posixpath.normpath(posixpath.join(posixpath.dirname(repo_page), path)))
    return out


def on_files(files: Files, config) -> Files:
    _site.clear()
    for f in files:
        _site[_repo_path(f.src_uri)] = f.src_uri
    for repo, page in PAGES.items():
        files.append(File.generated(config, page, abs_src_path=str(ROOT / repo)))
        _site[repo] = page
    # what the pages link to outside docs/ (results/*.png, ...): published under repo/<path>
    pages = [_repo_path(f.src_uri) for f in files.documentation_pages()]
    for repo in (p for p in pages if (ROOT / p).is_file()):  # generated pages link to nothing outside
        for target in _targets((ROOT / repo).read_text(), repo):
            if target not in _site and (ROOT / target).is_file() and not target.endswith(".md"):
                files.append(File.generated(config, f"repo/{target}", abs_src_path=str(ROOT / target)))
                _site[target] = f"repo/{target}"
    for src_uri, content in gallery_files():
        files.append(File.generated(config, src_uri, content=content))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Each relative link, resolved in the repository, pointed at the site's file for it."""
    repo_page = _repo_path(page.file.src_uri)
    here = posixpath.dirname(page.file.src_uri)

    def fix(m: re.Match) -> str:
        target = m.group(2)
        path, _, anchor = target.partition("#")
        if not path or "://" in path or path.startswith("mailto:"):
            return m.group(0)
        repo = posixpath.normpath(posixpath.join(posixpath.dirname(repo_page), path))
        if repo not in _site:
            return m.group(0)  # not in the site: left as written, and the strict build reports it
        new = posixpath.relpath(_site[repo], here or ".")
        return f"{m.group(1)}{new}{'#' + anchor if anchor else ''}{m.group(3)}"

    return LINK.sub(fix, markdown)


# ---- docstrings: reStructuredText math and roles, as Markdown the site renders ----

ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|obj|exc):`~?([^`]*)`")
MATH_ROLE = re.compile(r":math:`([^`]*)`")
MATH_BLOCK = re.compile(r"^( *)\.\. math::[ \t]*(.*(?:\n\1 {3,}\S.*)*)", re.M)


def rst_to_markdown(text: str) -> str:
    """``:math:`x``` -> ``$x$``, a ``.. math::`` block -> ``$$...$$``, ``:class:`X``` and its kin -> ``X`` as code
    (``double backticks`` are already code in Markdown)."""
    text = MATH_BLOCK.sub(lambda m: f"{m.group(1)}$$\n{m.group(1)}{' '.join(m.group(2).split())}\n{m.group(1)}$$",
                          text)
    return ROLE.sub(r"`\1`", MATH_ROLE.sub(r"$\1$", text))


try:
    import griffe

    class RstDocstrings(griffe.Extension):
        """A griffe extension (``mkdocs.yml``: the python handler's ``extensions``): every docstring through
        :func:`rst_to_markdown` before mkdocstrings renders it."""

        def on_instance(self, *, obj, **kwargs) -> None:
            if obj.docstring is not None:
                obj.docstring.value = rst_to_markdown(obj.docstring.value)
except ImportError:  # the hooks are imported by the docs build only, which has griffe
    pass


# ---- the gallery, drawn from the registries ----

def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _defined_in(s) -> str:
    fn = s.proxy_fn or s.derivative_fn
    return f"`{fn.__module__}`" if fn is not None else "its registration (a piecewise table)"


def _ste_figure(s, bits: int = 2) -> bytes:
    """Left: the 2-bit staircase (Lloyd's alpha) with the proxy mu; right: mu' (the backward)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from stelab import lloyd_alpha
    from stelab.activations import quantizers

    alpha = lloyd_alpha(bits)
    top = float(quantizers.get("staircase").top(bits, alpha))
    x = torch.linspace(-1.5 * top, 2.0 * top, 2001, dtype=torch.float64)
    d = s.derivative(x, top)
    try:
        mu = s.proxy(x, top)
        how = "mu"
    except ValueError:  # registered by mu' only: mu as its integral from 0
        mu = torch.cumulative_trapezoid(d, x, dim=0)
        mu = torch.cat([mu[:1] * 0, mu]) - float(torch.cat([mu[:1] * 0, mu])[(x.abs()).argmin()])
        how = "mu (integral of mu')"
    fig, (a, b) = plt.subplots(1, 2, figsize=(8.4, 3.4))
    a.plot(x, quantizers.staircase(x, bits, alpha), color="0.3", label=f"{bits}-bit staircase")
    a.plot(x, quantizers.get("sign")(x, 1, top), color="0.6", ls=":", label="sign (scaled to top)")
    a.plot(x, mu.detach(), color="C0", label=how)
    a.set_title(f"{s.label}: forwards and the proxy", fontsize=10)
    a.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, frameon=False)
    b.plot(x, d, color="C1")
    b.set_title("backward: mu'(x)", fontsize=10)
    for ax in (a, b):
        ax.axvline(0, color="0.8", lw=0.8)
        ax.axvline(top, color="0.8", lw=0.8, ls="--")
    b.set_xlabel(f"x  (dashed: top = {top:.3g}, Lloyd's 2-bit alpha x 3)")
    return _png(fig)


def _ste_section(s) -> str:
    params = ", ".join(f"`{k}={v!r}`" for k, v in s.params.items()) or "none"
    if s.piecewise is not None:
        table = (f"piecewise constant: breaks (times top) `{s.piecewise.breaks}`, values `{s.piecewise.values}`; "
                 "runs on the fused operator")
    else:
        table = "smooth `mu'` (a function): runs on the general path"
    doc = inspect.cleandoc(s.doc or "") or "(no docstring)"
    doc = rst_to_markdown(doc)
    return (f"## `{s.name}`\n\n![{s.name}: forward, proxy and backward](stes/{s.name}.png)\n\n"
            f"| use it as | parameters | monotone | zero for x <= 0 | scale-invariant | defined in |\n"
            f"|---|---|---|---|---|---|\n| `ste=\"{s.label}\"` | {params} | {s.monotone} | {s.zero_below} | "
            f"{s.scale_invariant} | {_defined_in(s)} |\n\n{table}.\n\n{doc}\n\n")


def _forward_figure(name: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from stelab.activations import quantizers

    q = quantizers.get(name)
    fig, ax = plt.subplots(figsize=(4.4, 3.0))
    x = torch.linspace(-2.0, 4.0, 3001, dtype=torch.float64)
    for bits in sorted({1, min(2, q.max_bits)}):
        alpha = q.default_alpha(bits)
        ax.plot(x, q(x, bits, alpha), label=f"{bits} bit(s), alpha {alpha:.3g}")
    ax.set_title(f"forward quantizer {name}", fontsize=10)
    ax.legend(fontsize=8)
    ax.set_xlabel("x")
    return _png(fig)


def _weight_figure(name: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from stelab.weights import quantizers as wq

    q = wq.get(name)
    fig, ax = plt.subplots(figsize=(4.4, 3.0))
    widths = sorted({q.min_bits, min(q.max_bits, 3)})
    lim = max(2.0, q.q_max(widths[-1]) + 1.0)  # both widths' clipping in view
    w = torch.linspace(-lim, lim, 3001, dtype=torch.float64)
    for bits in widths:
        ax.plot(w, q(w, 1.0, bits), label=f"{bits} bit(s), scale 1")
    ax.set_title(f"weight quantizer {name}", fontsize=10)
    ax.legend(fontsize=8)
    ax.set_xlabel("w")
    return _png(fig)


def gallery_files() -> list[tuple[str, str | bytes]]:
    """``(site path, content)`` of the gallery pages and their PNGs."""
    from stelab import ste
    from stelab.activations import quantizers
    from stelab.weights import quantizers as wq

    out: list[tuple[str, str | bytes]] = []
    stes = [ste.get(n) for n in ste.names()]
    page = ["# STE gallery\n\nEvery registered straight-through estimator, drawn from the registry when this site was "
            "built (`stelab.ste.names()`; a package's STEs through its `stelab.stes` entry point too). Left: the "
            "2-bit staircase forward with the STE's proxy `mu`; right: `mu'`, what the backward multiplies the "
            "incoming gradient by. `stelab info` prints the same table.\n\n"]
    for s in stes:
        page.append(_ste_section(s))
        out.append((f"gallery/stes/{s.name}.png", _ste_figure(s)))
    out.append(("gallery/stes.md", "".join(page)))
    page = ["# Quantizer gallery\n\nThe forward quantizers of activations "
            "(`stelab.activations.quantizers.names()`) and the weight quantizers "
            "(`stelab.weights.quantizers.names()`), drawn from their registries.\n\n"]
    for name in quantizers.names():
        q = quantizers.get(name)
        page.append(f"## Activations: `{name}`\n\n![{name}](quantizers/{name}.png)\n\nUse as `forward=\"{name}\"`, "
                    f"1-{q.max_bits} bits. {inspect.cleandoc(q.doc)}\n\n")
        out.append((f"gallery/quantizers/{name}.png", _forward_figure(name)))
    for name in wq.names():
        q = wq.get(name)
        page.append(f"## Weights: `{name}`\n\n![{name}](quantizers/w-{name}.png)\n\nUse as "
                    f"`weights={{\"quantizer\": \"{name}\"}}`, {q.min_bits}-{q.max_bits} bits, scale rules "
                    f"{', '.join(f'`{r}`' for r in q.rules)}. {inspect.cleandoc(q.doc)}\n\n")
        out.append((f"gallery/quantizers/w-{name}.png", _weight_figure(name)))
    out.append(("gallery/quantizers.md", "".join(page)))
    return out
