"""Save DataJoint's diagram of every scopeline table as docs/figures/pipeline.png (and .svg).

Needs Graphviz (`apt-get install graphviz`) and a database (the configured one, or the private
server): the schemas are activated under a throw-away prefix and dropped again.

    python scripts/diagram.py
"""

from __future__ import annotations

import uuid
from pathlib import Path

from scopeline._dj import dj
from scopeline.pipeline import SCHEMAS, activate, drop

OUT = Path(__file__).resolve().parents[1] / "docs" / "figures" / "pipeline"


def main() -> None:
    activate(prefix=f"scopeline_diagram_{uuid.uuid4().hex[:6]}_")
    try:
        context = {name: module for module, name in SCHEMAS}  # tables named module.Table
        diagram = None
        for module, _ in SCHEMAS:
            part = dj.Diagram(module.schema, context=context)
            diagram = part if diagram is None else diagram + part
        for fmt in ("png", "svg"):
            diagram.save(f"{OUT}.{fmt}", format=fmt)
            print(f"wrote {OUT}.{fmt}")
    finally:
        drop(force=True)


if __name__ == "__main__":
    main()
