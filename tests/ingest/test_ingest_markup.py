"""Front matter becomes metadata; template tags are removed; any common encoding decodes."""

from __future__ import annotations

import codecs

import pytest

from ingest.markup import decode_bytes, front_matter_meta, split_front_matter, strip_template_tags


def test_yaml_front_matter_becomes_metadata():
    meta, body = split_front_matter(
        "---\ntitle: Leave policy\nurl: https://x.example/leave\ntags: [a, b]\n---\n# Leave\n"
    )
    assert meta["title"] == "Leave policy"
    assert front_matter_meta(meta) == {"title": "Leave policy", "url": "https://x.example/leave"}
    assert body == "# Leave\n"


def test_toml_front_matter():
    meta, body = split_front_matter('+++\ntitle = "Travel"\n+++\nBody text')
    assert meta == {"title": "Travel"}
    assert body == "Body text"


def test_malformed_front_matter_is_dropped_not_fatal():
    meta, body = split_front_matter("---\ntitle: [unclosed\n---\nStill indexed.")
    assert meta == {}
    assert body == "Still indexed."


def test_no_front_matter_leaves_text_alone():
    text = "Intro\n---\nnot front matter\n---\n"
    assert split_front_matter(text) == ({}, text)


def test_template_tags_removed():
    src = (
        'Ask in {% slack_channel "people-ops" %} or see {% page "/travel/" %}.\n'
        "{% comment %}secret editor note{% endcomment %}"
        '{% alert "Heads up" %}Leave is 25 days.{% endalert %} {{ site.title | upcase }}'
        "{#- jinja comment -#}{%- raw -%}kept{%- endraw -%}"
    )
    out = strip_template_tags(src)
    assert "{%" not in out and "{{" not in out and "{#" not in out
    assert "#people-ops" in out
    assert "secret editor note" not in out
    assert "Leave is 25 days." in out
    assert "kept" in out


@pytest.mark.parametrize(
    "data",
    [
        "Café menu".encode(),
        codecs.BOM_UTF8 + "Café menu".encode(),
        "Café menu".encode("utf-16"),
        "Café menu".encode("utf-16-le"),
        "Café menu".encode("utf-16-be"),
        "Café menu".encode("utf-32"),
        "Café menu".encode("cp1252"),
    ],
)
def test_decode_common_encodings(data):
    assert decode_bytes(data) == "Café menu"
