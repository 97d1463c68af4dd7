"""`mlrollouts crds`: write the CustomResourceDefinitions generated from the API models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "crds",
        help="write the CustomResourceDefinitions",
        description="Write crds/<plural>.mlrollouts.io.yaml, generated from the API models.",
    )
    parser.add_argument(
        "--output-dir", type=Path, default=Path("crds"), help="directory to write to (default: crds)"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 when the files in --output-dir differ from the models",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from mlrollouts.api.crd import rendered_crds, write_crds

    output_dir: Path = args.output_dir
    if args.check:
        stale = [
            name
            for name, text in rendered_crds().items()
            if not (output_dir / name).is_file() or (output_dir / name).read_text() != text
        ]
        for name in stale:
            print(f"{output_dir / name}: out of date (run make crds)", file=sys.stderr)
        return 1 if stale else 0
    for path in write_crds(output_dir):
        print(path)
    return 0
