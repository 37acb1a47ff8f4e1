"""The README's two set-up commands stay in step with CI and the Space configuration."""

from __future__ import annotations

import re

from conftest import REPO


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    setup = readme.split("## Set up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    commands = [block.strip() for block in _bash_blocks(setup)]
    assert len(commands) == 2, "README must keep exactly two set-up commands"
    assert commands[0].endswith("python app.py")
    ci_lines = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert commands[1] in ci_lines


def test_space_front_matter_pins_the_installed_gradio():
    import gradio

    front = (REPO / "README.md").read_text(encoding="utf-8").split("---")[1]
    assert f"sdk_version: {gradio.__version__}" in front
    assert "app_file: app.py" in front
    assert f"gradio=={gradio.__version__}" in (REPO / "requirements.txt").read_text(encoding="utf-8")
