"""docs/hooks.md documents every hook in qcore.spec, with the right firstresult and a valid example."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from qcore.spec import SPEC_MODULES, hook_names

HOOKS_MD = Path(__file__).resolve().parents[1] / "docs" / "hooks.md"


def _sections() -> dict[str, str]:
    """``{heading: body}`` for every ``### qcore_*`` heading of docs/hooks.md."""
    text = HOOKS_MD.read_text()
    parts = re.split(r"^#{2,3} +`?(qcore_\w+)`? *$", text, flags=re.MULTILINE)
    return {parts[i]: re.split(r"^## ", parts[i + 1], flags=re.MULTILINE)[0] for i in range(1, len(parts), 2)}


def _spec(name):
    return next(getattr(m, name) for m in SPEC_MODULES if hasattr(m, name))


def test_every_hook_is_documented_and_nothing_else():
    sections = _sections()
    missing = [name for name in hook_names() if name not in sections]
    assert not missing, f"hooks without a section in docs/hooks.md: {missing}"
    stale = [name for name in sections if name not in hook_names()]
    assert not stale, f"docs/hooks.md documents hooks qcore.spec does not define: {stale}"


@pytest.mark.parametrize("name", hook_names())
def test_section_states_arguments_return_and_firstresult(name):
    body = _sections().get(name)
    assert body is not None, f"{name} is not documented in docs/hooks.md"
    assert "**Arguments:**" in body and "**Returns:**" in body
    firstresult = _spec(name).qcore_spec["firstresult"]
    assert f"**firstresult:** {'yes' if firstresult else 'no'}." in body
    for argument in inspect.signature(_spec(name)).parameters:
        assert f"`{argument}`" in body, f"{name}: argument {argument} is not described"


@pytest.mark.parametrize("name", hook_names())
def test_example_is_a_valid_hookimpl(name):
    body = _sections().get(name, "")
    blocks = re.findall(r"```python\n(.*?)```", body, flags=re.DOTALL)
    assert blocks, f"{name} has no python example"
    tree = ast.parse(blocks[-1])
    functions = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == name]
    assert functions, f"the example for {name} does not define {name}"
    function = functions[0]
    assert any(ast.unparse(d).startswith("hookimpl") for d in function.decorator_list)
    arguments = [a.arg for a in function.args.args]
    assert set(arguments) <= set(inspect.signature(_spec(name)).parameters), arguments
