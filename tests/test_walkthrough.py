"""docs/WALKTHROUGH.md is executable: its ```python blocks run in order, in one namespace.

Like a notebook: every block fenced as ```python is executed, top to bottom, in a single fresh
dict namespace, so a later block sees the names of the earlier ones. Blocks fenced otherwise
(```text for output and quoted code that must not run, ```bash for commands) are not run. A
```text block that directly follows a ```python block (nothing but blank lines between) is that
block's expected output: what the block prints must match it (doctest rules: ``...`` matches
anything, runs of whitespace are equal). A block that raises (a failed ``assert`` included) or
prints something else fails the test with its number, its line in the file and its first line,
so the page cannot drift from the code.
"""

from __future__ import annotations

import contextlib
import doctest
import io
import linecache
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

WALKTHROUGH = Path(__file__).resolve().parents[1] / "docs" / "WALKTHROUGH.md"

# info strings a fence of the walkthrough may carry; anything else (```py, ```Python) would be
# skipped silently, so it is an error instead
KNOWN_LANGUAGES = {"python", "text", "bash"}

_OPEN = re.compile(r"^(?P<fence>`{3,})(?P<info>[^`]*)$")


@dataclass(frozen=True)
class Block:
    """One fenced block: its language, the 1-based lines of its opening and closing fences, and
    its source."""

    language: str
    line: int
    end: int
    source: str

    @property
    def first_line(self) -> str:
        return next((s.strip() for s in self.source.splitlines() if s.strip()), "")


class WalkthroughError(AssertionError):
    """A block of the walkthrough failed (or the file's fences are malformed)."""


def fenced_blocks(markdown: str) -> list:
    """Every fenced block of ``markdown`` in order (fences start at column 0; a block closes at
    the first line that is a fence of at least the opening fence's length and nothing else)."""
    blocks, lines, k = [], markdown.splitlines(), 0
    while k < len(lines):
        m = _OPEN.match(lines[k].rstrip())
        if m is None:
            k += 1
            continue
        fence, start = m.group("fence"), k
        language = m.group("info").strip().split(" ")[0].lower()
        k += 1
        body = []
        while k < len(lines):
            s = lines[k].rstrip()
            if s.startswith(fence) and set(s) == {"`"}:
                break
            body.append(lines[k])
            k += 1
        else:
            raise WalkthroughError(f"line {start + 1}: the fence {lines[start]!r} is never closed")
        blocks.append(Block(language, start + 1, k + 1, "\n".join(body) + "\n"))
        k += 1
    return blocks


def python_blocks(markdown: str) -> list:
    """The ```python blocks, in order."""
    return [b for b in fenced_blocks(markdown) if b.language == "python"]


_CHECKER = doctest.OutputChecker()
_OUTPUT_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def expected_output(markdown: str, blocks: list, k: int):
    """The ```text block right after ``blocks[k]`` (only blank lines between), or None."""
    if k + 1 >= len(blocks) or blocks[k + 1].language != "text":
        return None
    between = markdown.splitlines()[blocks[k].end : blocks[k + 1].line - 1]
    return blocks[k + 1] if all(not s.strip() for s in between) else None


def run_blocks(markdown: str, *, name: str = "<markdown>") -> dict:
    """Execute the ```python blocks of ``markdown`` in order in one fresh namespace; return it.

    Each block's printed output is checked against the ```text block right after it, if any.
    Raises WalkthroughError naming the block number (1-based among the python blocks), its line
    and its first line, chained to the original exception.
    """
    namespace: dict = {"__name__": "__walkthrough__"}
    blocks = fenced_blocks(markdown)
    n = 0
    for k, block in enumerate(blocks):
        if block.language != "python":
            continue
        n += 1
        where = f"{name}: python block {n} (line {block.line}, first line {block.first_line!r})"
        filename = f"<{name} python block {n}, line {block.line}>"
        # register the source so tracebacks show the failing line of the block
        linecache.cache[filename] = (len(block.source), None, block.source.splitlines(True),
                                     filename)
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                exec(compile(block.source, filename, "exec"), namespace)
        except Exception as e:
            raise WalkthroughError(f"{where} failed: {type(e).__name__}: {e}") from e
        want = expected_output(markdown, blocks, k)
        if want is not None and not _CHECKER.check_output(want.source, out.getvalue(),
                                                          _OUTPUT_FLAGS):
            diff = _CHECKER.output_difference(doctest.Example("", want.source), out.getvalue(),
                                              _OUTPUT_FLAGS)
            raise WalkthroughError(
                f"{where} does not print what the ```text block at line {want.line} shows:\n"
                f"{diff}"
            )
    return namespace


# ----------------------------------------------------------------------------- the walkthrough


def test_walkthrough_runs():
    markdown = WALKTHROUGH.read_text(encoding="utf-8")
    blocks = fenced_blocks(markdown)
    # a broken fence would silently skip blocks, a moved one silently skip an output check
    assert len(python_blocks(markdown)) >= 20
    assert sum(expected_output(markdown, blocks, k) is not None for k in range(len(blocks))) >= 10
    run_blocks(markdown, name="docs/WALKTHROUGH.md")


def test_readme_python_blocks_run():
    """The README's examples (the 'check your own implementation' one) run as written."""
    readme = WALKTHROUGH.parents[1] / "README.md"
    markdown = readme.read_text(encoding="utf-8")
    assert len(python_blocks(markdown)) >= 1
    run_blocks(markdown, name="README.md")


def test_walkthrough_fences_are_known_languages():
    bad = [(b.line, b.language) for b in fenced_blocks(WALKTHROUGH.read_text(encoding="utf-8"))
           if b.language not in KNOWN_LANGUAGES]
    assert not bad, f"fences with an unknown info string (line, language): {bad}"


# ----------------------------------------------------------------------------- the runner itself


SYNTHETIC = """\
# a page

```python
x = 1
```

Some prose, then a quoted block (not output: prose stands between), never run:

```text
raise SystemExit("a text block must not run")
```

```python
y = x + 1   # the namespace is shared
```

```python
assert 1 == 2
```

```python
z = 3   # never reached
```
"""


def test_runner_raises_on_a_failing_block_and_names_it():
    # test the tester: a block that fails must fail the run, named by number and first line
    with pytest.raises(WalkthroughError) as e:
        run_blocks(SYNTHETIC, name="synthetic")
    msg = str(e.value)
    assert "python block 3" in msg and "line 17" in msg and "'assert 1 == 2'" in msg
    assert isinstance(e.value.__cause__, AssertionError)


def test_runner_shares_one_namespace_and_skips_other_fences():
    ns = run_blocks(SYNTHETIC.replace("assert 1 == 2", "assert y == 2"))
    assert (ns["x"], ns["y"], ns["z"]) == (1, 2, 3)
    assert [b.language for b in fenced_blocks(SYNTHETIC)] == ["python", "text"] + ["python"] * 3


def test_runner_checks_printed_output_against_the_adjacent_text_block():
    ok = "```python\nprint(1 + 1, [0.25,  'x'])\n```\n\n```text\n2 [0.25, 'x']\n```\n"
    run_blocks(ok)
    run_blocks(ok.replace("```text\n2", "```text\n..."))  # ELLIPSIS
    with pytest.raises(WalkthroughError, match=r"(?s)python block 1 \(line 1.*line 5.*Expected"):
        run_blocks(ok.replace("```text\n2", "```text\n3"))
    # a text block after prose is a quotation, not output
    run_blocks(ok.replace("```\n\n```text", "```\n\nQuoted:\n\n```text"))


def test_runner_starts_from_a_fresh_namespace():
    run_blocks("```python\nleft_behind = 1\n```\n")
    with pytest.raises(WalkthroughError, match="NameError"):
        run_blocks("```python\nleft_behind\n```\n")


def test_runner_rejects_an_unclosed_fence():
    with pytest.raises(WalkthroughError, match="never closed"):
        fenced_blocks("text\n```python\nx = 1\n")


def test_runner_reports_syntax_errors_as_block_failures():
    with pytest.raises(WalkthroughError, match="python block 1.*SyntaxError"):
        run_blocks("```python\ndef broken(:\n```\n")
