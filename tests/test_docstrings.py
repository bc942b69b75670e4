"""Every documented argument exists in the signature it documents.

Parses the `Args:` section of each public function, method and class in
the package and checks each listed name against `inspect.signature`.
"""

import importlib
import inspect
import pkgutil
import re

import pytest

import keras_mwbp

_ARG_LINE = re.compile(r"^\s{4,}(\*{0,2}[A-Za-z_][A-Za-z0-9_]*)(?: \([^)]*\))?:")


def _documented_args(docstring):
    names = []
    in_args = False
    indent = None
    for line in docstring.splitlines():
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:"):
            in_args = True
            indent = None
            continue
        if in_args:
            if stripped and not line.startswith(" "):
                break
            if stripped.endswith(":") and stripped[:-1] in (
                "Returns", "Raises", "Example", "Examples", "Attributes", "Yields", "Note"
            ):
                break
            match = _ARG_LINE.match(line)
            if match:
                current = len(line) - len(line.lstrip())
                if indent is None:
                    indent = current
                if current == indent:
                    names.append(match.group(1).lstrip("*"))
    return names


def _public_callables():
    modules = [keras_mwbp]
    for info in pkgutil.walk_packages(keras_mwbp.__path__, "keras_mwbp."):
        if info.name.endswith("__main__"):
            continue
        modules.append(importlib.import_module(info.name))
    seen = set()
    for module in modules:
        for name, value in vars(module).items():
            if name.startswith("_") or getattr(value, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(value) and id(value) not in seen:
                seen.add(id(value))
                yield f"{module.__name__}.{name}", value, value
            elif inspect.isclass(value) and id(value) not in seen:
                seen.add(id(value))
                yield f"{module.__name__}.{name}", value, value.__init__
                for method_name, method in vars(value).items():
                    if inspect.isfunction(method) and not method_name.startswith("_"):
                        yield f"{module.__name__}.{name}.{method_name}", method, method


CASES = list(_public_callables())


@pytest.mark.parametrize("name,documented,signature_of", CASES, ids=[c[0] for c in CASES])
def test_documented_args_exist(name, documented, signature_of):
    # Only the object's own docstring: an override without one inherits the
    # Keras docstring, which documents Keras's signature.
    docstring = inspect.cleandoc(documented.__doc__ or "")
    args = _documented_args(docstring)
    if not args:
        return
    parameters = inspect.signature(signature_of).parameters
    has_var_keyword = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    has_var_positional = any(p.kind is p.VAR_POSITIONAL for p in parameters.values())
    for arg in args:
        if arg in parameters:
            continue
        if arg == "kwargs" and has_var_keyword:
            continue
        if arg == "args" and has_var_positional:
            continue
        raise AssertionError(
            f"{name} documents argument `{arg}`, which its signature "
            f"{list(parameters)} does not have."
        )
