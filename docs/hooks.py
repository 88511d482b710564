"""mkdocs hooks: the site is built from the repository as it is, so nothing in docs/ is a copy.

- the home page is README.md; the results pages are results/*.md with their pictures;
- the guides' nav lists whatever docs/guides/*.md exist (a guide added on another branch joins it);
- the CLI reference is argparse's own help of every subcommand, the API reference the docstrings of
  what ``litefer`` exports (``litefer._LAZY``), both generated at build time;
- a relative link is resolved from the file's place in the repository: to its page when the site has
  one, else to its repository path as text (a config, a script), so no link in the site is broken.
"""
from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File

REPO = Path(__file__).resolve().parent.parent
# guides in reading order; any other docs/guides/*.md follows, by name
GUIDE_ORDER = ["recognize", "video", "serve", "explain", "adapt", "train", "export", "many-machines",
               "reliability", "limits", "model", "pipeline"]
# public names beyond litefer's own exports that the guides use
API_EXTRA = ["litefer.inference.explain.Explanation", "litefer.inference.draw.overlay_explanations",
             "litefer.preprocess.Preprocess", "litefer.export.graph.export_onnx", "litefer.export.graph.onnx_parity"]
GENERATED = {"reference/cli.md", "reference/api.md"}
LINK = re.compile(r"(```.*?```|`[^`\n]*`)|(!?)\[([^\]\n]*)\]\(([^)\s]+)\)", re.S)


def _title(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return path.stem


def _nav_entries(folder: str, order: list[str] = ()) -> list[dict]:
    paths = sorted((REPO / folder).glob("*.md"), key=lambda p: (p.stem not in order,
                                                                order.index(p.stem) if p.stem in order else 0, p.name))
    return [{_title(p): p.relative_to(REPO / "docs" if folder.startswith("docs") else REPO).as_posix()}
            for p in paths]


def on_config(config, **kwargs):
    """The nav, from the files that exist now."""
    results = [e for e in _nav_entries("results") if "results/README.md" not in e.values()]
    config["nav"] = [{"Home": "index.md"}, {"Guides": _nav_entries("docs/guides", GUIDE_ORDER)},
                     {"Reference": [{"Python API": "reference/api.md"}, {"Command line": "reference/cli.md"}]},
                     {"Results": [{"Overview": "results/README.md"}, *results]}]
    return config


def on_files(files, config, **kwargs):
    """README as the home page, results/ as it is, and the two generated references."""
    files.append(File.generated(config, "index.md", abs_src_path=str(REPO / "README.md")))
    for path in sorted((REPO / "results").iterdir()):
        if path.suffix in (".md", ".png"):
            files.append(File.generated(config, f"results/{path.name}", abs_src_path=str(path)))
    files.append(File.generated(config, "reference/cli.md", content=cli_reference()))
    files.append(File.generated(config, "reference/api.md", content=api_reference()))
    return files


def origin(src_uri: str) -> str | None:
    """Where a page of the site lives in the repository."""
    if src_uri in GENERATED:
        return None
    if src_uri == "index.md":
        return "README.md"
    return src_uri if src_uri.startswith("results/") else f"docs/{src_uri}"


def on_page_markdown(markdown, page, config, files, **kwargs):
    home = origin(page.file.src_uri)
    if home is None:
        return markdown
    site = {origin(f.src_uri): f.src_uri for f in files if origin(f.src_uri)}
    site["results"] = site["results/"] = "results/README.md"
    return LINK.sub(lambda m: _relink(m, home, page.file.src_uri, site), markdown)


def _relink(m, home: str, src_uri: str, site: dict) -> str:
    code, bang, text, target = m.groups()
    if code is not None or re.match(r"[a-z]+:|#", target):
        return m.group(0)
    path, _, anchor = target.partition("#")
    repo_path = posixpath.normpath(posixpath.join(posixpath.dirname(home), path))
    if repo_path in site:
        rel = posixpath.relpath(site[repo_path], posixpath.dirname(src_uri) or ".")
        return f"{bang}[{text}]({rel}{'#' + anchor if anchor else ''})"
    shown = f"`{repo_path}`"
    return text if text.strip("`") in (repo_path, path) or text == shown else f"{text} ({shown})"


def cli_reference() -> str:
    """Every subcommand's ``--help``, as argparse prints it."""
    os.environ["COLUMNS"] = "100"
    from litefer.cli import COMMANDS, build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if a.dest == "command").choices
    parts = ["# Command line", "", "Generated from the argparse parsers when the site is built "
             "(`litefer COMMAND --help` prints the same).", "", "```text", parser.format_help(), "```"]
    for name in COMMANDS:
        parts += ["", f"## litefer {name}", "", "```text", subs[name].format_help(), "```"]
    return "\n".join(parts) + "\n"


def api_reference() -> str:
    """The docstrings of ``litefer``'s exports, then a few modules' names the guides use."""
    import litefer

    names = [f"{module}.{name}" for name, module in litefer._LAZY.items()] + API_EXTRA
    parts = ["# Python API", "", "Generated from the docstrings when the site is built. `import litefer` "
             "exports the names of the first section; each lives in the module shown.", ""]
    for i, dotted in enumerate(names):
        if i == len(litefer._LAZY):
            parts += ["## Also used in the guides", ""]
        parts += [f"::: {dotted}", "    options:", "      heading_level: 3", ""]
    return "\n".join(parts)
