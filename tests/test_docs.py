"""Documentation that is derived from code must match the code."""

from __future__ import annotations

from pathlib import Path

from dirsync_pipeline.warehouse.tables import contract_markdown

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_table_contract_doc_matches_the_code():
    text = (DOCS / "tables.md").read_text()
    generated = text.split("<!-- BEGIN GENERATED CONTRACT -->\n", 1)[1].split("<!-- END GENERATED CONTRACT -->", 1)[0]
    assert generated.strip() == contract_markdown().strip(), "regenerate: python -m dirsync_pipeline.warehouse.tables"


def test_every_image_the_readme_shows_exists():
    """The screenshots are taken by tests/test_browser.py; the README must not point at one it stopped taking."""
    import re

    readme = (DOCS.parent / "README.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme)
    assert images and all((DOCS.parent / image).is_file() for image in images)
