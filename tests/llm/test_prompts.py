"""The prompt registry on a real workspace (SQLite): versions, identical templates, aliases,
declared variables, rendering, the audit trail and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from shipyard.data.catalog import write_dataset
from shipyard.errors import DatasetNotFoundError, ModelNotFoundError, ParameterError
from shipyard.governance.audit import entries, verify
from shipyard.llm.prompts import (
    PromptNotFoundError,
    create_prompt,
    get_prompt,
    list_prompts,
    parse_ref,
    set_prompt_alias,
)
from shipyard.workspace import Workspace

SYSTEM = {"role": "system", "content": "Answer positive or negative."}
USER = {"role": "user", "content": "Review: {text}"}


def _eval_set(workspace: Workspace, name: str = "llm-sentiment-test") -> str:
    """A two-row evaluation set in the catalog (the prompt's variables and ``expected``)."""
    rows = pd.DataFrame({"text": ["A delight.", "A bore."], "expected": ["positive", "negative"]})
    write_dataset(workspace, name, rows, time_column=None)
    return name


def test_versions_count_up_and_an_identical_template_is_reused(workspace: Workspace) -> None:
    _eval_set(workspace)
    v1 = create_prompt(workspace, "sentiment", [SYSTEM, USER], variables={"text": "string"})
    changed = {"role": "system", "content": "Classify the review: positive or negative."}
    v2 = create_prompt(workspace, "sentiment", [changed, USER], variables={"text": "string"})
    again = create_prompt(workspace, "sentiment", [SYSTEM, USER])  # same as v1 in full form
    assert (v1.version, v2.version) == (1, 2)
    assert v1.created and v2.created and not again.created
    assert again.version == 1 and again.sha256 == v1.sha256 != v2.sha256
    # another evaluation set makes another version, even for the same template
    linked = create_prompt(workspace, "sentiment", [SYSTEM, USER], eval_set="llm-sentiment-test")
    assert linked.version == 3 and linked.eval_set == "llm-sentiment-test"
    assert [p.version for p in list_prompts(workspace)] == [1, 2, 3]
    assert get_prompt(workspace, "sentiment", "latest").version == 3
    assert get_prompt(workspace, "sentiment", "2").messages[0] == changed


def test_aliases_move_and_are_audited(workspace: Workspace) -> None:
    create_prompt(workspace, "p", [USER])
    create_prompt(workspace, "p", [SYSTEM, USER])
    set_prompt_alias(workspace, "p", "production", 1, reason="first", actor="ana")
    moved = set_prompt_alias(workspace, "p", "production", 2, reason="clearer system prompt")
    assert moved.version == 2 and moved.aliases == ("production",)
    assert get_prompt(workspace, "p", "production").version == 2
    assert get_prompt(workspace, "p", "@production").version == 2
    assert get_prompt(workspace, "p", 1).aliases == ()
    trail = entries(workspace, kind="prompt", name="p")
    assert [e.action for e in trail] == [
        "prompt.create",
        "prompt.create",
        "prompt.alias",
        "prompt.alias",
    ]
    assert trail[0].after["messages"] == [USER]
    assert (trail[3].alias, trail[3].previous_version, trail[3].version) == ("production", 1, 2)
    assert trail[2].actor == "ana" and trail[3].reason == "clearer system prompt"
    assert verify(workspace).ok


def test_unknown_prompts_versions_and_aliases_say_what_exists(workspace: Workspace) -> None:
    create_prompt(workspace, "p", [USER])
    with pytest.raises(PromptNotFoundError, match=r"No prompt named 'q'; prompts: \['p'\]"):
        get_prompt(workspace, "q", 1)
    with pytest.raises(PromptNotFoundError, match=r"no version 7; versions: \[1\]"):
        get_prompt(workspace, "p", 7)
    with pytest.raises(ModelNotFoundError, match="no alias 'prod'"):  # the server's 404
        get_prompt(workspace, "p", "prod")
    with pytest.raises(PromptNotFoundError, match="no version 2"):
        set_prompt_alias(workspace, "p", "prod", 2, reason="x")
    with pytest.raises(ParameterError, match="latest"):
        set_prompt_alias(workspace, "p", "latest", 1, reason="x")
    with pytest.raises(ParameterError, match="reason"):
        set_prompt_alias(workspace, "p", "prod", 1, reason=" ")
    with pytest.raises(DatasetNotFoundError, match="No data set 'llm-sentiment-tset'"):
        create_prompt(workspace, "p", [USER], eval_set="llm-sentiment-tset")


@pytest.mark.parametrize(
    ("messages", "variables", "message"),
    [
        ([], None, "non-empty list"),
        ([{"role": "robot", "content": "hi"}], None, r"messages\[0\].role.*robot"),
        ([{"role": "user", "content": 3}], None, r"messages\[0\].content"),
        ([{"role": "user", "content": "x", "name": "a"}], None, r"unknown key\(s\) \['name'\]"),
        ([USER], {}, r"undeclared variable\(s\) \['text'\]"),
        ([USER], {"text": "string", "movie": "string"}, r"\['movie'\] are declared but no"),
        ([USER], {"text": "date"}, r"variables\['text'\].type.*'date'"),
        ([USER], {"text": {"type": "string", "required": "yes"}}, "required"),
        ([USER], {"text": {"kind": "string"}}, r"unknown key\(s\) \['kind'\]"),
        ([{"role": "user", "content": "{text!r}"}], None, "no conversion or format spec"),
        ([{"role": "user", "content": "{0} {}"}], None, "plain variable names"),
        ([{"role": "user", "content": "{a.b}"}], None, "plain variable names"),
        ([{"role": "user", "content": "a } b"}], None, r"messages\[0\].content is not a valid"),
    ],
)
def test_bad_templates_are_refused_naming_the_problem(
    workspace: Workspace, messages: list[dict[str, object]], variables: object, message: str
) -> None:
    with pytest.raises(ParameterError, match=message):
        create_prompt(workspace, "p", messages, variables=variables)  # type: ignore[arg-type]
    assert list_prompts(workspace) == []


def test_render_fills_variables_and_checks_them(workspace: Workspace) -> None:
    prompt = create_prompt(
        workspace,
        "support",
        [{"role": "system", "content": "Reply in JSON like {{\"ok\": true}}. Tone: {tone}"},
         {"role": "user", "content": "{question} (order {order}, {amount} USD, vip {vip})"}],
        variables={
            "tone": {"type": "string", "required": False},
            "question": "string",
            "order": "integer",
            "amount": "number",
            "vip": "boolean",
        },
    )  # fmt: skip
    rendered = prompt.render(
        {"question": "Where is {it}?", "order": 12, "amount": 9.5, "vip": True}
    )
    assert rendered == [
        {"role": "system", "content": 'Reply in JSON like {"ok": true}. Tone: '},
        {"role": "user", "content": "Where is {it}? (order 12, 9.5 USD, vip True)"},
    ]
    good = {"question": "q", "order": 1, "amount": 1, "vip": False}
    for bad, message in [
        ({k: v for k, v in good.items() if k != "question"}, "needs variable 'question'"),
        ({**good, "colour": "red"}, r"no variable\(s\) \['colour'\]"),
        ({**good, "order": 1.5}, "'order' must be an integer; got 1.5"),
        ({**good, "order": True}, "'order' must be an integer"),
        ({**good, "amount": float("nan")}, "'amount' must be a finite number"),
        ({**good, "vip": "yes"}, "'vip' must be true or false"),
        ({**good, "question": 5}, "'question' must be a string"),
    ]:
        with pytest.raises(ParameterError, match=message):
            prompt.render(bad)
    with pytest.raises(ParameterError, match="mapping"):
        prompt.render(["q"])  # type: ignore[arg-type]


def test_parse_ref() -> None:
    assert parse_ref("s@2") == ("s", 2)
    assert parse_ref("s@production") == ("s", "production")
    assert parse_ref("s") == ("s", "latest")


def test_command_line(workspace: Workspace, tmp_path: Path) -> None:
    from shipyard.cli.main import cli

    template = tmp_path / "sentiment.yaml"
    template.write_text(
        "description: one-word sentiment\n"
        "messages:\n"
        "  - {role: system, content: 'Answer positive or negative.'}\n"
        "  - {role: user, content: 'Review: {text}'}\n"
        "variables:\n"
        "  text: {type: string, description: the review}\n"
    )
    _eval_set(workspace, "llm-x")
    runner = CliRunner()
    base = ["-w", str(workspace.root), "llm", "prompts"]
    created = runner.invoke(cli, [*base, "create", "sentiment", "--file", str(template)])
    assert created.exit_code == 0, created.output
    assert "sentiment v1" in created.output
    as_json = tmp_path / "v2.json"
    as_json.write_text(json.dumps({"messages": [USER]}))
    result = runner.invoke(
        cli, [*base, "create", "sentiment", "--file", str(as_json), "--eval-set", "llm-x"]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, [*base, "alias", "sentiment", "production", "1", "--reason", "ok"])
    assert result.exit_code == 0, result.output
    listed = runner.invoke(cli, [*base, "list"])
    assert "production" in listed.output and "llm-x" in listed.output
    shown = runner.invoke(cli, [*base, "show", "sentiment@production", "--json"])
    assert json.loads(shown.output)["messages"][1] == USER
    assert json.loads(shown.output)["variables"]["text"]["description"] == "the review"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"messages": [USER], "variables": {}}))
    refused = runner.invoke(cli, [*base, "create", "sentiment", "--file", str(bad)])
    # Shipyard errors reach shipyard.cli.main.main, which prints them as one line
    assert isinstance(refused.exception, ParameterError)
    assert "undeclared variable(s) ['text']" in str(refused.exception)
    missing = runner.invoke(cli, [*base, "show", "sentiment@9"])
    assert isinstance(missing.exception, PromptNotFoundError)
    assert "no version 9" in str(missing.exception)
    unreadable = tmp_path / "broken.yaml"
    unreadable.write_text("messages: [unclosed\n")
    result = runner.invoke(cli, [*base, "create", "sentiment", "--file", str(unreadable)])
    assert result.exit_code == 2 and "is not valid" in result.output
