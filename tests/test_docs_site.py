"""The documentation site's hooks (docs/hooks.py), without building the site (.ci/run builds it with
``mkdocs build --strict``): every guide is in the nav, links are resolved from the file's place in the
repository, and the CLI reference covers every command."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("mkdocs", reason="the [docs] extra (mkdocs) is not installed")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def hooks():
    spec = importlib.util.spec_from_file_location("litefer_docs_hooks", REPO / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_guide_is_in_the_nav(hooks):
    nav = hooks.on_config({})["nav"]
    guides = next(entry["Guides"] for entry in nav if "Guides" in entry)
    listed = [path for entry in guides for path in entry.values()]
    known = [f"guides/{g}.md" for g in hooks.GUIDE_ORDER if f"guides/{g}.md" in listed]
    assert listed[:len(known)] == known   # reading order first, any other guide after
    assert set(listed) == {f"guides/{p.name}" for p in (REPO / "docs" / "guides").glob("*.md")}
    assert listed[0] == "guides/recognize.md"


def test_links_resolve_from_the_repository(hooks):
    files = [SimpleNamespace(src_uri=u) for u in ("index.md", "guides/serve.md", "results/serve.md")]
    page = SimpleNamespace(file=SimpleNamespace(src_uri="index.md"))
    text = ("[Serve](docs/guides/serve.md#the-api) [s](results/serve.md) [c](configs/x.yaml) "
            "`[k](v)` [w](https://example.org)")
    out = hooks.on_page_markdown(text, page, None, files)
    assert out == ("[Serve](guides/serve.md#the-api) [s](results/serve.md) c (`configs/x.yaml`) "
                   "`[k](v)` [w](https://example.org)")
    page = SimpleNamespace(file=SimpleNamespace(src_uri="guides/serve.md"))
    assert hooks.on_page_markdown("[r](../../results/serve.md)", page, None, files) == "[r](../results/serve.md)"


def test_cli_reference_has_every_command(hooks):
    from litefer.cli import COMMANDS

    text = hooks.cli_reference()
    assert re.findall(r"^## litefer (\w+)$", text, re.M) == list(COMMANDS)
    assert "--save-annotated" in text and "--max-upload-mb" in text
