"""Thinking where the reasoning block replaces part of the assistant opening, where thinking
off replaces the end of the generation prompt, and where the switch is not ``enable_thinking``.

Shapes taken from GLM 4.7 / 5.1 (``<think>R</think>`` vs ``</think>``), Nemotron 3 (dropped
reasoning leaves ``<think></think>\\n``) and Command-A (``reasoning=False``). Claims are
re-rendered by Go; a template whose default is thinking off must not get the capability.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.chat_template import TemplateSource, load_probes, translate_template
from deploy_to_ollama.chat_template.go_template import parse_template
from deploy_to_ollama.chat_template.ollama_prompt import infer_thinking_tags, template_thinks
from deploy_to_ollama.chat_template.prompt_diff import strip_bos
from deploy_to_ollama.chat_template.switched import OFF_BY_DEFAULT
from deploy_to_ollama.chat_template.think_generations import DEFAULT_OFF_NOTE, thinking_json
from deploy_to_ollama.chat_template.thinking import switch_name, think_kwargs
from support.go_claims import go_mismatches

LAST_QUERY = (
    "{% set ns = namespace(last=-1) %}{% for m in messages %}{% if m.role == 'user' %}"
    "{% set ns.last = loop.index0 %}{% endif %}{% endfor %}"
)
# GLM 4.7: a turn after the last user message opens <think>R</think>, any other </think>;
# thinking off writes </think> where on writes <think>.
GLM_LIKE = (
    LAST_QUERY + "{% for m in messages %}{% if m.role == 'assistant' %}<|assistant|>"
    "{% if m.reasoning_content and loop.index0 > ns.last %}<think>{{ m.reasoning_content }}"
    "</think>{% else %}</think>{% endif %}{{ m.content }}"
    "{% else %}<|{{ m.role }}|>{{ m.content }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>"
    "{% if enable_thinking is defined and not enable_thinking %}</think>{% else %}<think>"
    "{% endif %}{% endif %}"
)
# Nemotron 3: dropped reasoning leaves its own trace (a newline more than a plain turn).
NEMOTRON_LIKE = (
    LAST_QUERY + "{% for m in messages %}{% if m.role == 'assistant' %}<|im_start|>assistant\n"
    "{% if m.reasoning_content and loop.index0 > ns.last %}<think>\n{{ m.reasoning_content }}"
    "\n</think>\n{% elif m.reasoning_content %}<think></think>\n{% else %}<think></think>"
    "{% endif %}{{ m.content }}{% if not loop.last %}<|im_end|>\n{% endif %}"
    "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think></think>"
    "{% else %}<think>\n{% endif %}{% endif %}"
)
# Command-A: the switch is `reasoning` (default true), enable_thinking means nothing.
REASONING_SWITCH = GLM_LIKE.replace(
    "{% if enable_thinking is defined and not enable_thinking %}",
    "{% if reasoning is defined and not reasoning %}",
)
PLAIN = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Thinking off by default: Ollama's unset think is on, so no TEMPLATE matches both.
DEFAULT_OFF = GLM_LIKE.replace(
    "{% if enable_thinking is defined and not enable_thinking %}</think>{% else %}<think>",
    "{% if enable_thinking is defined and enable_thinking %}<think>{% else %}</think>",
)


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


def _probes(result: Any) -> dict[str, Any]:
    return {p.probe: p for p in result.report.probes}


def test_reasoning_that_replaces_the_opening_is_translated() -> None:
    result = translate_template(_source(GLM_LIKE))
    assert result.verified and result.report.thinking_verified
    assert infer_thinking_tags(parse_template(result.template)) == ("<think>", "</think>")
    probes = _probes(result)
    assert (probes["think_on"].actual or "").endswith("<|assistant|><think>")
    assert (probes["think_off"].actual or "").endswith("<|assistant|></think>")
    earlier = probes["earlier_reasoning"].actual or ""
    assert "17 * 3 = 51." not in earlier and "<|assistant|></think>51." in earlier
    prefill = probes["reasoning_prefill"].actual or ""
    assert prefill.endswith("<|assistant|><think>10 is even, 11 is prime.</think>11")


def test_dropped_reasoning_keeps_its_trace() -> None:
    result = translate_template(_source(NEMOTRON_LIKE))
    assert result.verified and result.report.thinking_verified
    assert infer_thinking_tags(parse_template(result.template)) == ("<think>", "</think>")
    probes = _probes(result)
    earlier = probes["earlier_reasoning"].actual or ""
    assert "<|im_start|>assistant\n<think></think>\n51.<|im_end|>" in earlier
    assert (probes["think_off"].actual or "").endswith("assistant\n<think></think>")
    assert (probes["think_on"].actual or "").endswith("assistant\n<think>\n")


def test_think_maps_onto_the_templates_own_switch() -> None:
    source = _source(REASONING_SWITCH)
    assert switch_name(source) == "reasoning"
    assert think_kwargs(source, think=False) == {"reasoning": False}
    assert think_kwargs(source, think=None) == {}
    assert switch_name(_source(GLM_LIKE)) == "enable_thinking"
    result = translate_template(source)
    assert result.verified and result.report.thinking_verified
    # The Jinja side of think_off was rendered with reasoning=False, and the TEMPLATE agrees.
    off = _probes(result)["think_off"]
    assert (off.expected or "").endswith("<|assistant|></think>") and off.status == "match"


def test_a_template_that_defaults_to_thinking_off_switches_thinking_with_a_warning() -> None:
    result = translate_template(_source(DEFAULT_OFF))
    assert result.verified  # plain chat still holds
    assert template_thinks(result.template) and OFF_BY_DEFAULT in result.template
    assert result.report.thinking_verified and result.report.thinking_default_off
    # On the newest Ollama a request without think is think true: compared as such, and said.
    single = _probes(result)["single_user"]
    assert single.status == "match" and single.unset_think_on
    assert thinking_json(result.report)["note"] == DEFAULT_OFF_NOTE
    # A template with its default on gets no such warning.
    plain = translate_template(_source(PLAIN)).report
    assert not plain.thinking_default_off


# SmolLM3: thinking off rewrites the system block, every assistant turn and the generation
# prompt, and no turn's reasoning is ever printed.
SMOLLM3_LIKE = (
    "{%- if enable_thinking is not defined %}{% set enable_thinking = true %}{% endif -%}"
    "<|im_start|>system\nMode: {{ '/think' if enable_thinking else '/no_think' }}\n"
    "{% if messages[0].role == 'system' %}{{ messages[0].content }}"
    "{% elif enable_thinking %}Think hard.{% else %}Be brief.{% endif %}<|im_end|>\n"
    "{% for m in messages %}{% if m.role == 'user' %}<|im_start|>user\n{{ m.content }}"
    "<|im_end|>\n{% elif m.role == 'assistant' %}<|im_start|>assistant\n"
    "{% if not enable_thinking %}<think>\n\n</think>\n{% endif %}{{ m.content }}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if not enable_thinking %}<think>\n\n</think>\n{% endif %}{% endif %}"
)


def test_a_switch_that_rewrites_the_system_block_gets_one_template_per_setting() -> None:
    result = translate_template(_source(SMOLLM3_LIKE))
    assert result.verified and result.report.thinking_verified
    # Tags from the empty block thinking off prints, declared where nothing is printed.
    assert infer_thinking_tags(parse_template(result.template)) == ("<think>", "</think>")
    probes = _probes(result)
    on, off = probes["think_on"].actual or "", probes["think_off"].actual or ""
    assert "Mode: /think\nThink hard." in on and on.endswith("assistant\n")
    assert "Mode: /no_think\nBe brief." in off and off.endswith("assistant\n<think>\n\n</think>\n")
    assert "17 * 3 = 51." not in (probes["earlier_reasoning"].actual or "")
    # A request without think is the template's default (on), as Ollama sends it.
    assert "Mode: /think\nThink hard." in (probes["single_user"].actual or "")


# QwQ / DeepSeek-R1 distills: the generation prompt opens the block, earlier turns keep only
# what follows </think>, and there is no switch.
OPENED_BY_PROMPT = (
    "{% for m in messages %}{% if m.role == 'assistant' %}"
    "{% set content = m.content %}{% if not loop.last %}"
    "{% set content = m.content.split('</think>')[-1].lstrip('\\n') %}{% endif %}"
    "<|im_start|>assistant\n{{ content }}{% if not loop.last %}<|im_end|>\n{% endif %}"
    "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)


def test_a_generation_prompt_that_opens_the_block_gets_the_tags() -> None:
    result = translate_template(_source(OPENED_BY_PROMPT))
    assert result.verified and result.report.thinking_verified
    assert infer_thinking_tags(parse_template(result.template)) == ("<think>", "</think>")
    probes = _probes(result)
    assert (probes["think_on"].actual or "").endswith("assistant\n<think>\n")
    assert (probes["think_off"].actual or "") == (probes["think_on"].actual or "")
    # Without evidence of the closing tag (the Jinja keeps what precedes </think>), no tags.
    keeps = OPENED_BY_PROMPT.replace(".split('</think>')[-1].lstrip('\\n')", "")
    kept = translate_template(_source(keeps))
    assert kept.verified and not template_thinks(kept.template)


def _assert_go_holds(go_oracle: Any, template: str, must: set[str]) -> None:
    """Every match claimed for ``template`` holds when Go renders the TEMPLATE."""
    source = _source(template)
    result = translate_template(source)
    claims = [c for c in result.report.probes if c.status == "match"]
    assert must <= {c.probe for c in claims}
    assert go_mismatches(go_oracle, source, result, claims) == []


@pytest.mark.parametrize(
    "template",
    [GLM_LIKE, NEMOTRON_LIKE, REASONING_SWITCH, SMOLLM3_LIKE, OPENED_BY_PROMPT],
    ids=["glm", "nemotron", "reasoning_switch", "smollm3", "opened_by_prompt"],
)
def test_go_renders_the_thinking_claims(go_oracle: Any, template: str) -> None:
    _assert_go_holds(go_oracle, template, {"think_on", "think_off", "earlier_reasoning"})


# SmolLM3 proper: /no_think or /think in the system message overrides enable_thinking and is
# cut out of the printed system text.
SMOLLM3_FLAGS = (
    "{%- if enable_thinking is not defined %}{% set enable_thinking = true %}{% endif -%}"
    "{%- set mode = enable_thinking -%}{%- if messages[0].role == 'system' -%}"
    "{%- if '/no_think' in messages[0].content %}{% set mode = false %}"
    "{% elif '/think' in messages[0].content %}{% set mode = true %}{% endif -%}"
    "{%- set sys = messages[0].content.replace('/no_think', '').replace('/think', '').rstrip() -%}"
    "{%- endif -%}"
    "<|im_start|>system\nMode: {{ '/think' if mode else '/no_think' }}\n"
    "{% if sys %}{{ sys }}{% elif mode %}Think hard.{% else %}Be brief.{% endif %}<|im_end|>\n"
    "{% for m in messages %}{% if m.role == 'user' %}<|im_start|>user\n{{ m.content }}"
    "<|im_end|>\n{% elif m.role == 'assistant' %}<|im_start|>assistant\n"
    "{% if not mode %}<think>\n\n</think>\n{% endif %}{{ m.content }}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if not mode %}<think>\n\n</think>\n{% endif %}{% endif %}"
)
FLAG_CASES = [
    ("Answer briefly. /no_think", None),
    ("/no_think", True),
    ("Answer in full. /think", False),
    ("Ünïcode, no flag.", None),
]


@pytest.mark.parametrize(("system", "think"), FLAG_CASES)
def test_system_message_flags_switch_thinking_as_the_jinja(
    go_oracle: Any, system: str, think: bool | None
) -> None:
    from deploy_to_ollama.chat_template.hf_render import render_hf
    from deploy_to_ollama.chat_template.ollama_prompt import render_ollama_prompt
    from support.go_oracle import to_ollama_api_messages

    source = _source(SMOLLM3_FLAGS)
    result = translate_template(source)
    assert result.verified and result.report.thinking_verified
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "Hi"}]
    kwargs = think_kwargs(source, think=think)
    expected = render_hf(
        SMOLLM3_FLAGS, messages, tokens={}, add_generation_prompt=True, kwargs=kwargs
    )
    ours = render_ollama_prompt(result.template, messages, system=result.system, think=think)
    assert ours == expected
    (go,) = go_oracle.run(
        [
            {
                "kind": "ollama",
                "template": result.template,
                "messages": to_ollama_api_messages(messages),
                "system": result.system or "",
                "think": think,
            }
        ]
    )
    assert not go.failed, go.error
    assert go.output == expected
    # The flag decides over think, and is cut out of the printed system text.
    off = "/no_think" in system or (think is False and "/think" not in system)
    assert ("Mode: /no_think\n" in expected) is off
    cleaned = system.replace("/no_think", "").replace("/think", "").rstrip()
    default = "Be brief." if off else "Think hard."
    assert f"\n{cleaned or default}<|im_end|>" in expected


SMOLLM3_CORPUS = (
    "chatml__huggingfacetb-smollm3-3b.json",
    "chatml__huggingfacetb-smollm3-3b__hfjs-e2e.json",
    "chatml__mistral.rs-smollm3.json",
)


@pytest.mark.parametrize("name", SMOLLM3_CORPUS)
def test_smollm3_flags_render_in_go_as_transformers(go_oracle: Any, name: str) -> None:
    """The real SmolLM3 templates: thinking verified, and system flags obeyed by Go."""
    import json

    from deploy_to_ollama.chat_template.hf_render import render_hf
    from support.go_oracle import to_ollama_api_messages
    from support.shared import CHAT_TEMPLATES_DIR, require_shared

    record = json.loads((require_shared(CHAT_TEMPLATES_DIR) / name).read_text(encoding="utf-8"))
    source = TemplateSource(
        template=record["jinja"],
        origin=CHAT_TEMPLATES_DIR / name,
        kind="jinja",
        bos_token=record.get("bos_token") or "<s>",
        eos_token=record.get("eos_token") or "</s>",
    )
    result = translate_template(source)
    assert result.report.public_verified and result.report.thinking_verified
    cases, expected = [], []
    for system, think in FLAG_CASES:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": "Hi"}]
        expected.append(
            render_hf(
                source.template,
                messages,
                tokens=source.template_variables(),
                add_generation_prompt=True,
                kwargs=think_kwargs(source, think=think),
            )
        )
        cases.append(
            {
                "kind": "ollama",
                "template": result.template,
                "messages": to_ollama_api_messages(messages),
                "system": result.system or "",
                "think": think,
            }
        )
    for want, go in zip(expected, go_oracle.run(cases), strict=True):
        assert not go.failed, go.error
        exp, act = strip_bos(want, go.output, source.bos_token)
        assert exp == act


@pytest.mark.parametrize(
    "name",
    ["gpt-oss__openai-gpt-oss-120b.json", "gpt-oss__unsloth-gpt-oss.json"],
)
def test_think_levels_map_onto_reasoning_effort(go_oracle: Any, name: str) -> None:
    """gpt-oss: think "high"/"low" reach the Jinja's reasoning_effort through .ThinkLevel;
    think true/false keep its default (medium), as the Jinja has no off setting."""
    import json

    from deploy_to_ollama.chat_template.hf_render import render_hf
    from support.go_oracle import to_ollama_api_messages
    from support.shared import CHAT_TEMPLATES_DIR, require_shared

    record = json.loads((require_shared(CHAT_TEMPLATES_DIR) / name).read_text(encoding="utf-8"))
    source = TemplateSource(
        template=record["jinja"],
        origin=CHAT_TEMPLATES_DIR / name,
        kind="jinja",
        bos_token=record.get("bos_token") or "<s>",
        eos_token=record.get("eos_token") or "</s>",
    )
    result = translate_template(source)
    assert result.report.public_verified and result.report.thinking_verified
    assert "$.ThinkLevel" in result.template
    messages = [{"role": "user", "content": "Hi"}]
    thinks: list[str | bool] = ["high", "low", "medium", True, False]
    cases = [
        {
            "kind": "ollama",
            "template": result.template,
            "messages": to_ollama_api_messages(messages),
            "system": result.system or "",
            # A string think reaches Ollama as a level (api.ThinkValue with a string).
            **({"think_level": think} if isinstance(think, str) else {"think": think}),
        }
        for think in thinks
    ]
    for think, go in zip(thinks, go_oracle.run(cases), strict=True):
        effort = think if isinstance(think, str) else "medium"
        want = render_hf(
            source.template,
            messages,
            tokens=source.template_variables(),
            add_generation_prompt=True,
            kwargs={"reasoning_effort": effort},
        )
        assert not go.failed, go.error
        assert f"Reasoning: {effort}\n" in go.output
        exp, act = strip_bos(want, go.output, source.bos_token)
        assert exp == act, think


def test_no_think_level_where_the_jinja_prints_no_effort() -> None:
    assert "ThinkLevel" not in translate_template(_source(GLM_LIKE)).template


@pytest.mark.parametrize(
    "name",
    ["glm__zai-org-glm-5.1.json", "chatml__nvidia-nemotron-3-nano-30b-a3b-bf16.json"],
)
def test_thinking_and_tool_calls_verify_together(go_oracle: Any, name: str) -> None:
    """GLM 5.1 opens a tool-call turn after the last user message with an empty reasoning
    block, Nemotron 3 trims the reasoning block with the content before its tool calls: both
    keep tools and thinking in one TEMPLATE, and Go renders every such claim as transformers."""
    import json

    from deploy_to_ollama.chat_template.tool_tag import tool_call_tag
    from deploy_to_ollama.chat_template.verify import json_equivalent
    from support.go_oracle import to_ollama_api_messages
    from support.shared import CHAT_TEMPLATES_DIR, require_shared

    record = json.loads((require_shared(CHAT_TEMPLATES_DIR) / name).read_text(encoding="utf-8"))
    source = TemplateSource(
        template=record["jinja"],
        origin=CHAT_TEMPLATES_DIR / name,
        kind="jinja",
        bos_token=record.get("bos_token") or "<s>",
        eos_token=record.get("eos_token") or "</s>",
    )
    result = translate_template(source)
    report = result.report
    assert report.verified and report.tools_verified and report.thinking_verified
    assert (tool_call_tag(result.template) or "").startswith("<tool_call>")
    assert infer_thinking_tags(parse_template(result.template)) == ("<think>", "</think>")
    probes = {p.id: p for p in load_probes()}
    claims = [
        c
        for c in report.probes
        if c.status == "match" and (probes[c.probe].needs_tools or probes[c.probe].needs_thinking)
    ]
    assert {"reasoning_tool_loop", "think_off", "tool_call_and_result"} <= {c.probe for c in claims}
    cases = []
    for claim in claims:
        probe = probes[claim.probe]
        case = {
            "kind": "ollama",
            "template": result.template,
            "messages": to_ollama_api_messages(list(probe.messages)),
            "system": result.system or "",
            "think": probe.think,
        }
        if probe.tools:
            case["tools"] = list(probe.tools)
        cases.append(case)
    for claim, go in zip(claims, go_oracle.run(cases), strict=True):
        assert not go.failed, (claim.probe, go.error)
        exp, act = strip_bos(claim.expected or "", go.output, source.bos_token)
        if claim.tier == "exact":
            assert exp == act, claim.probe
        else:
            assert json_equivalent(source, probes[claim.probe], claim.expected or "", act)
