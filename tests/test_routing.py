"""``deploy --template-route`` decided on purpose (issue 13 item 4), as pure logic: the proofs are
given, the server version is a string. Servers newer than our 0.9.3 test server exist here only
as version strings (``0.33.0``): that is the stand-in, the selection rules are ``ollama_route``.
The live deploys are in ``test_routing_ollama.py``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.errors import InputError, TemplateMismatchError, UsageError
from deploy_to_ollama.modelfile import Modelfile, TemplateResult
from deploy_to_ollama.ollama_client import ShownModel
from deploy_to_ollama.ollama_route import ModelFacts, select_route
from deploy_to_ollama.routing import (
    CURRENT,
    LEGACY,
    GoProof,
    NativeProof,
    check_route_request,
    choose_route,
    confirm_route,
    go_proof,
    library_fallback,
    modelfile_for_route,
    raise_for_route,
)
from support.shared import corpus_records

NEW, OLD = "0.33.0", "0.9.3"
CHATML_GO = (
    "{{ range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n"
)
PLAIN_JINJA = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
#: Ollama's substring rule sees tools; our TEMPLATE above has none: tools are lost.
TOOLS_JINJA = "{% if tools %}{{ tools | tojson }}{% endif %}" + PLAIN_JINJA
GO_OK = GoProof(verified=True)
NATIVE_OK = NativeProof(available=True, verified=True, exact=12, compared=12)


def _choose(requested: Any = "auto", **kwargs: Any) -> Any:
    values: dict[str, Any] = {
        "version": NEW,
        "jinja": PLAIN_JINJA,
        "go": GO_OK,
        "native": None,
        "template": CHATML_GO,
    }
    return choose_route(requested, **(values | kwargs))


def _template(jinja: str, *, verified: bool = True, differs: tuple[str, ...] = ()) -> GoProof:
    result = TemplateResult(CHATML_GO, (), None, verified, differs=differs)
    return go_proof(result, jinja)


def test_go_at_parity_is_proven_on_both_generations_and_auto_takes_it() -> None:
    proof = _template(PLAIN_JINJA)
    assert proof.proven_on() == (LEGACY, CURRENT)
    for version in (OLD, NEW):
        choice = _choose(go=proof, version=version)
        assert (choice.route, choice.proven, choice.failure) == ("go", True, None)
        assert choice.capabilities == ("completion",)
    assert "both server generations" in _choose(go=proof).reason
    assert _choose(go=proof).to_json()["template_route"] == "go"


def test_a_template_that_lost_tools_is_replaced_on_current_ollama_so_auto_goes_native() -> None:
    proof = _template(TOOLS_JINJA)
    assert proof.verified and not proof.kept_on_current and proof.proven_on() == (LEGACY,)
    choice = _choose(go=proof, jinja=TOOLS_JINJA, native=NATIVE_OK)
    assert choice.route == "native" and choice.proven
    assert "tools" in choice.capabilities and choice.capabilities_lost == ()
    assert "GGUF Jinja on llama.cpp's engine verified" in choice.proof
    # The same model on 0.9.3: the go route, and the loss stated (exit 3 only with --strict).
    old = _choose(go=proof, jinja=TOOLS_JINJA, version=OLD)
    assert old.route == "go" and old.capabilities_lost == ("tools",) and old.failure is None
    assert any(w.startswith("template_overridden: on Ollama 0.30+") for w in old.warnings)
    assert not _choose(go=_template(PLAIN_JINJA), version=OLD).warnings  # kept on 0.30+ too
    assert any(line.startswith("CAPABILITIES LOST  tools") for line in old.summary_lines())
    strict = _choose(go=proof, jinja=TOOLS_JINJA, version=OLD, strict=True)
    assert strict.failure is not None and "capabilities_lost (--strict)" in strict.failure
    with pytest.raises(TemplateMismatchError) as info:
        raise_for_route(strict)
    assert info.value.exit_code == 3
    assert strict.to_json()["capabilities_lost"] == ["tools"]


def test_go_asked_for_where_ollama_replaces_it_is_reported_as_the_native_route() -> None:
    proof = _template(TOOLS_JINJA)
    choice = _choose("go", go=proof, jinja=TOOLS_JINJA, native=NATIVE_OK)
    assert choice.route == "native" and choice.requested == "go"
    assert "asked for with --template-route go, but" in choice.reason
    unproven = _choose("go", go=proof, jinja=TOOLS_JINJA, native=None)
    assert unproven.route == "native" and not unproven.proven and unproven.failure


def test_neither_proven_deploys_the_better_one_names_the_probes_and_fails() -> None:
    go = GoProof(verified=False, differs=("tools_called", "prefill"), kept_on_current=True)
    native = NativeProof(available=True, verified=False, differs=("prefill",), compared=10)
    choice = _choose(go=go, native=native)
    assert choice.route == "native" and not choice.proven
    assert choice.failure is not None
    assert "go: probes tools_called, prefill differ" in choice.failure
    assert "native: probes prefill differ" in choice.failure
    worse = NativeProof(available=True, verified=False, differs=("a", "b", "c"), compared=10)
    assert _choose(go=go, native=worse).route == "go"
    # On 0.9.x only the go route exists: it is the better one by definition.
    assert _choose(go=go, native=None, version=OLD).route == "go"


def test_native_is_refused_where_the_server_or_the_gguf_cannot_take_it() -> None:
    with pytest.raises(InputError) as info:
        _choose("native", version=OLD)
    assert info.value.exit_code == 1 and "0.30" in info.value.message
    unparsable = NativeProof(available=False, reason="Unknown statement: raw")
    with pytest.raises(InputError, match="Unknown statement: raw"):
        _choose("native", native=unparsable)
    # auto with native unavailable: go, and the reason said once, in the proof of native.
    go = GoProof(verified=False, differs=("x",))
    choice = _choose(go=go, native=unparsable)
    assert choice.route == "go" and choice.failure is not None
    assert choice.failure.count("Unknown statement: raw") == 1
    with pytest.raises(UsageError):
        check_route_request("jinja")


def test_an_unreadable_server_version_is_the_newest_with_a_warning() -> None:
    proof = _template(TOOLS_JINJA)
    choice = _choose(go=proof, jinja=TOOLS_JINJA, native=NATIVE_OK, version="banana")
    assert choice.generation == CURRENT and choice.route == "native"
    assert choice.warnings and "banana" in choice.warnings[0]


def test_the_native_modelfile_has_no_template_system_renderer_or_parser() -> None:
    go_file = Modelfile(
        from_="./m.gguf",
        template=CHATML_GO,
        system="You are Qwen.",
        parameters=(("stop", "<|im_end|>"),),
        extra=(("renderer", "qwen3"), ("parser", "qwen3"), ("requires", "0.30.0")),
    )
    choice = _choose(go=_template(TOOLS_JINJA), jinja=TOOLS_JINJA, native=NATIVE_OK)
    native_file = modelfile_for_route(choice, go_file)
    assert native_file.template is None and native_file.system is None
    assert native_file.extra == (("requires", "0.30.0"),)
    assert native_file.parameters == go_file.parameters
    assert modelfile_for_route(_choose(), go_file) is go_file


def test_a_library_template_attached_by_create_is_what_the_route_becomes() -> None:
    native_plain = NativeProof(available=True, verified=True, compared=3, exact=3)
    choice = _choose("native", go=GoProof(verified=False), native=native_plain)
    assert choice.route == "native" and choice.proven
    shown = ShownModel(template=CHATML_GO, capabilities=["completion"])
    confirmed = confirm_route(choice, shown, jinja=PLAIN_JINJA)
    assert confirmed.library_template and confirmed.route == "go" and not confirmed.proven
    assert "library_template_attached" in confirmed.reason
    assert confirmed.failure is not None and "library TEMPLATE" in confirmed.failure
    # With tools in the Jinja, 0.30+ still prefers the Jinja over the attached template.
    tools_choice = _choose("native", jinja=TOOLS_JINJA, native=NATIVE_OK)
    kept = confirm_route(tools_choice, shown, jinja=TOOLS_JINJA)
    assert kept.route == "native" and kept.proven and kept.library_template
    # Nothing attached: /api/show prints the default {{ .Prompt }} (0.9.x, and 0.30+ on the
    # rendered path) or, on 0.30+'s native path, the Jinja itself: neither is a TEMPLATE layer.
    for shown_text in ("", "{{ .Prompt }}", PLAIN_JINJA):
        same = confirm_route(choice, ShownModel(template=shown_text), jinja=PLAIN_JINJA)
        assert same.route == "native" and same.proven and not same.library_template


#: A library Go template with tools (as qwen2.5's): 0.30+ keeps it against TOOLS_JINJA.
LIBRARY_TOOLS_GO = "{{ if .Tools }}{{ range .Tools }}{{ . }}{{ end }}{{ end }}" + CHATML_GO


def test_auto_re_registers_with_our_template_where_a_library_one_leaves_native_unproven() -> None:
    go = _template(TOOLS_JINJA)  # verified, lacks tools: 0.30+ prefers the Jinja
    choice = _choose(jinja=TOOLS_JINJA, go=go, native=NATIVE_OK)
    assert choice.route == "native" and choice.proven
    shown = ShownModel(template=LIBRARY_TOOLS_GO, capabilities=["completion", "tools"])
    attached = confirm_route(choice, shown, jinja=TOOLS_JINJA)
    assert attached.route == "go" and not attached.proven and attached.failure is not None
    fallback = library_fallback(attached, jinja=TOOLS_JINJA, template=CHATML_GO)
    assert fallback is not None and fallback.proven and fallback.failure is None
    # With our TEMPLATE beside it the Jinja still wins on 0.30+: the native proof backs it.
    assert fallback.route == "native" and fallback.requested == "auto"
    assert "re-registered with our verified TEMPLATE" in fallback.reason
    assert not fallback.library_template and "tools" in fallback.capabilities
    shown_ours = ShownModel(template=CHATML_GO)
    ours = confirm_route(fallback, shown_ours, jinja=TOOLS_JINJA, template=CHATML_GO)
    assert ours.route == "native" and ours.proven and not ours.library_template
    # No fallback: the route was asked for, our TEMPLATE is not verified, or nothing failed.
    forced = confirm_route(replace(choice, requested="native"), shown, jinja=TOOLS_JINJA)
    assert library_fallback(forced, jinja=TOOLS_JINJA, template=CHATML_GO) is None
    unverified = _choose(jinja=TOOLS_JINJA, go=_template(TOOLS_JINJA, verified=False),
                         native=NativeProof(available=False, reason="x"))  # fmt: skip
    assert library_fallback(
        replace(unverified, library_template=True, proven=False),
        jinja=TOOLS_JINJA, template=CHATML_GO,
    ) is None  # fmt: skip
    assert library_fallback(choice, jinja=TOOLS_JINJA, template=CHATML_GO) is None


def _corpus_pairs() -> list[tuple[str, str]]:
    pairs = [
        (str(r["jinja"]), str(r["ollama_template"]))
        for r in corpus_records()
        if r.get("jinja") and r.get("ollama_template")
    ]
    if not pairs:
        pytest.skip("../shared/chat_templates is absent")
    return pairs


def test_over_the_corpus_the_reported_route_is_always_what_the_selection_says() -> None:
    """Target: 0 deploys whose reported route differs from ``ollama_route.select_route`` on
    the Modelfile deploy writes, for every corpus pair, request, proof outcome and version."""
    checked = 0
    proofs = [
        (GoProof(verified=v, differs=() if v else ("p",)), n)
        for v in (True, False)
        for n in (NATIVE_OK, NativeProof(available=True, verified=False, differs=("q", "r")), None)
    ]
    for jinja, template in _corpus_pairs():
        for version in (OLD, NEW):
            for requested in ("auto", "go", "native"):
                if requested == "native" and version == OLD:
                    continue
                for go, native in proofs:
                    kept = go_proof(TemplateResult(template, (), None, go.verified), jinja)
                    proof = GoProof(go.verified, go.differs, None, kept.kept_on_current)
                    choice = choose_route(
                        requested, version=version, jinja=jinja, go=proof, native=native,
                        template=template,
                    )  # fmt: skip
                    written = modelfile_for_route(choice, Modelfile("./m.gguf", template=template))
                    facts = ModelFacts(template=written.template, jinja=jinja)
                    decision = select_route(facts, version)
                    assert choice.route == ("native" if decision.path == "native" else "go")
                    assert choice.capabilities == decision.capabilities
                    checked += 1
    assert checked > 1000


def test_an_unknown_template_route_is_a_usage_error_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from support.cli import run_cli

    code, _, err = run_cli(
        ["deploy", str(tmp_path / "missing"), "--name", "m", "--template-route", "jinja"], capsys
    )
    assert code == 2 and "unknown --template-route 'jinja'" in err
    assert "auto, go, native" in err


def test_a_renderer_in_the_registered_model_takes_the_route_away_from_the_jinja() -> None:
    """RENDERER/PARSER (inherited from a FROM model, or set by create for some architectures)
    make Ollama render the prompt itself; /api/show prints them in its modelfile text."""
    from deploy_to_ollama.roundtrip.capability_check import check_capabilities

    choice = _choose("native", jinja=TOOLS_JINJA, native=NATIVE_OK)
    shown = ShownModel(modelfile="FROM /blobs/sha256-x\nRENDERER qwen3-coder\nPARSER qwen3-coder\n")
    confirmed = confirm_route(choice, shown, jinja=TOOLS_JINJA)
    assert confirmed.route == "go" and not confirmed.proven
    assert "RENDERER/PARSER" in confirmed.reason
    checked = check_capabilities(shown, NEW, TOOLS_JINJA)
    assert checked.route == "go" and "RENDERER/PARSER" in checked.reason
