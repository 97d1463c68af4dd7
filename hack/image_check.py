"""Build-time check of a container image's Python environment (used by both Dockerfiles).

`check` imports every module of the given packages, the public submodules of others and any extra
modules, so a clean-up step that deleted something they import fails the build instead of the
first request. `bytecode` imports the start-up modules and writes bytecode for exactly the modules
that import loaded, in unchecked-hash mode: the image never changes its sources, copies between
build stages may change file times, and a read-only root filesystem cannot take bytecode later.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import pkgutil
import py_compile
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path


def walk(package: str, skip: tuple[str, ...]) -> Iterator[str]:
    """Every module of a package, except `__main__` modules and those below a skipped prefix.

    Recurses by hand: pkgutil.walk_packages imports each subpackage to look inside it, skipped or not.
    """
    yield package
    root = importlib.import_module(package)
    for module in pkgutil.iter_modules(root.__path__, f"{package}."):
        name = module.name
        if name.endswith(".__main__") or any(name == s or name.startswith(f"{s}.") for s in skip):
            continue
        if module.ispkg:
            yield from walk(name, skip)
        else:
            yield name


def public_submodules(package: str) -> Iterator[str]:
    """The submodules a package lists in `__all__` (scikit-learn names its estimator families so)."""
    root = importlib.import_module(package)
    for name in getattr(root, "__all__", ()):
        if importlib.util.find_spec(f"{package}.{name}") is not None:
            yield f"{package}.{name}"


def import_all(names: Iterable[str]) -> list[str]:
    failures = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # any import-time error is a broken image
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
    return failures


def write_bytecode(prefix: Path) -> int:
    """Compile the loaded modules that live below prefix; returns how many were compiled."""
    count = 0
    for module in list(sys.modules.values()):
        source = getattr(module, "__file__", None)
        if not source or not source.endswith(".py") or not Path(source).is_relative_to(prefix):
            continue
        py_compile.compile(
            source, doraise=True, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH
        )
        count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["check", "bytecode"])
    parser.add_argument("--walk", nargs="*", default=[], help="packages whose every module is imported")
    parser.add_argument("--skip", nargs="*", default=[], help="module prefixes the walk leaves out")
    parser.add_argument(
        "--public", nargs="*", default=[], help="packages whose __all__ submodules are imported"
    )
    parser.add_argument("--modules", nargs="*", default=[], help="further modules to import")
    args = parser.parse_args(argv)

    names: list[str] = []
    for package in args.walk:
        names.extend(walk(package, tuple(args.skip)))
    for package in args.public:
        names.extend(public_submodules(package))
    names.extend(args.modules)
    failures = import_all(names)
    if failures:
        print("image check: modules that do not import:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    if args.action == "bytecode":
        count = write_bytecode(Path(sys.prefix))
        print(f"image check: bytecode for {count} start-up modules")
    else:
        print(f"image check: {len(names)} modules import")
    return 0


if __name__ == "__main__":
    sys.exit(main())
