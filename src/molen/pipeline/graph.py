"""The pipeline's graph as text, Mermaid or Graphviz dot (``molen dag``)."""

from __future__ import annotations

from molen.pipeline.spec import Pipeline

__all__ = ["render_dag"]


def render_dag(pipeline: Pipeline, form: str = "text") -> str:
    """The stages and the edges between them; ``form`` is text, mermaid or dot.

    Example: ``render_dag(pipeline, "mermaid")`` starts with ``flowchart TD``.
    """
    order = pipeline.order()
    edges = [(up, name) for name in order for up in sorted(pipeline.upstream[name], key=order.index)]
    if form == "mermaid":
        lines = ["flowchart TD"]
        lines += [f"    {_node(name)}[{name}]" for name in order]
        lines += [f"    {_node(up)} --> {_node(down)}" for up, down in edges]
        return "\n".join(lines)
    if form == "dot":
        lines = ["digraph pipeline {", "    rankdir=TB;", "    node [shape=box];"]
        lines += [f'    "{name}";' for name in order]
        lines += [f'    "{up}" -> "{down}";' for up, down in edges]
        return "\n".join([*lines, "}"])
    if not order:
        return "no stages: declare them under `stages:` in molen.yaml"
    lines = []
    for name in order:
        ups = sorted(pipeline.upstream[name], key=order.index)
        lines.append(f"{name}" + (f"  ← {', '.join(ups)}" if ups else ""))
        stage = pipeline.stages[name]
        lines.append(f"    $ {stage.cmd}")
        if stage.products:
            lines.append(f"    → {', '.join(stage.products)}")
    return "\n".join(lines)


def _node(name: str) -> str:
    """A Mermaid node id (letters, digits and _ only)."""
    return "s_" + "".join(c if c.isalnum() else "_" for c in name)
