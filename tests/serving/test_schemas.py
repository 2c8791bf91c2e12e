"""The endpoint spec: model URIs, variants, weights and updates, checked before anything runs.

Every refusal names the field a user has to fix (the REST API and the CLI show the message).
"""

from __future__ import annotations

import pytest

from shipyard.core.errors import InvalidArgument
from shipyard.serving.schemas import (
    EndpointCreate,
    EndpointSpec,
    EndpointUpdate,
    normalize_model_uri,
    parse,
)


def _v(schema, **data):  # type: ignore[no-untyped-def]
    return parse(schema, data)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("fraud@champion", "models:/fraud@champion"),
        ("fraud/3", "models:/fraud/3"),
        ("fraud/latest", "models:/fraud/latest"),
        ("models:/fraud/3", "models:/fraud/3"),
        ("runs:/0123abcd/model", "runs:/0123abcd/model"),
    ],
)
def test_short_model_uris_become_full_ones(given: str, expected: str) -> None:
    assert normalize_model_uri(given) == expected


@pytest.mark.parametrize(
    "bad", ["", "fraud", "fraud/x", "/etc/passwd", "s3://bucket/m", "models:/"]
)
def test_a_bad_model_uri_is_refused_naming_the_field(bad: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        _v(EndpointCreate, name="fraud", model=bad)
    assert err.value.details["field"] == "model"
    assert "model" in err.value.message


def test_the_model_shorthand_is_one_variant_taking_all_traffic() -> None:
    spec = _v(EndpointCreate, name="fraud", model="fraud@champion").spec()
    assert [(v.name, v.model, v.weight) for v in spec.variants] == [
        ("primary", "models:/fraud@champion", 1.0)
    ]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({}, "model"),
        ({"model": "a/1", "variants": [{"name": "b", "model": "a/2"}]}, "variants"),
        (
            {"variants": [{"name": "x", "model": "a/1"}, {"name": "x", "model": "a/2"}]},
            "variants",
        ),
        ({"variants": [{"name": "x", "model": "a/1", "weight": 0}]}, "variants"),
        ({"model": "a/1", "shadow": {"name": "primary", "model": "a/2"}}, "shadow.name"),
    ],
)
def test_specs_that_do_not_fit_together_name_the_field(fields: dict, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        _v(EndpointCreate, name="fraud", **fields).spec()
    assert err.value.details["field"] == field
    assert err.value.message.startswith(field)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": "bad name", "model": "a/1"}, "name"),
        ({"name": "ok", "model": "a/1", "capture": {"sample_rate": 1.5}}, "capture.sample_rate"),
        (
            {"name": "ok", "model": "a/1", "scaling": {"min_workers": 3, "max_workers": 2}},
            "scaling",
        ),
        (
            {"name": "ok", "model": "a/1", "batching": {"max_batch_size": 0}},
            "batching.max_batch_size",
        ),
        (
            {"name": "ok", "variants": [{"name": "v", "model": "a/1", "weight": -1}]},
            "variants.0.weight",
        ),
    ],
)
def test_field_errors_name_the_field(fields: dict, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        _v(EndpointCreate, **fields)
    named = [e["field"] for e in err.value.details["errors"]]
    assert field in named, err.value.details


def _ab() -> EndpointSpec:
    return _v(
        EndpointCreate,
        name="fraud",
        variants=[
            {"name": "blue", "model": "fraud/3", "weight": 9},
            {"name": "green", "model": "fraud/4", "weight": 1},
        ],
        shadow={"model": "fraud/5"},
        capture={"sample_rate": 0.5},
    ).spec()


def test_an_update_changes_only_what_it_names() -> None:
    old = _ab()
    new = _v(EndpointUpdate, weights={"green": 3}).apply(old)
    assert [(v.name, v.model, v.weight) for v in new.variants] == [
        ("blue", "models:/fraud/3", 9),
        ("green", "models:/fraud/4", 3),
    ]
    assert new.shadow == old.shadow and new.capture == old.capture


def test_a_new_model_replaces_the_variants_keeping_the_first_name() -> None:
    new = _v(EndpointUpdate, model="fraud@challenger").apply(_ab())
    assert [(v.name, v.model, v.weight) for v in new.variants] == [
        ("blue", "models:/fraud@challenger", 1.0)
    ]


def test_null_removes_the_shadow_and_capture_and_absent_keeps_them() -> None:
    upd = EndpointUpdate.model_validate({"shadow": None, "capture": None})
    new = upd.apply(_ab())
    assert new.shadow is None and new.capture is None
    kept = EndpointUpdate.model_validate({"scaling": {"max_workers": 4}}).apply(_ab())
    assert kept.shadow is not None and kept.capture is not None
    assert kept.scaling.max_workers == 4


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "body"),
        ({"weights": {"purple": 1}}, "weights.purple"),
        ({"model": "a/1", "weights": {"blue": 1}}, "weights"),
        ({"weights": {"blue": 0, "green": 0}}, "variants"),
    ],
)
def test_bad_updates_name_the_field(body: dict, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        EndpointUpdate.model_validate(body).apply(_ab())
    assert err.value.details["field"] == field
