"""The README's diagrams are the ones the code generates."""

from pathlib import Path

from machines.diagram import mermaid, rewrite

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_diagrams_are_current():
    text = README.read_text()
    assert rewrite(text) == text, "run `make diagrams` to regenerate the README's diagrams"


def test_diagrams_show_every_state():
    assert "breaker_open --> half_open: cooldown_elapsed" in mermaid("connection")
    assert "pending_cancel --> filled: fill" in mermaid("order")
