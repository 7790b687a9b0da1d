"""The document caches: strawberry's parse and validation factories, one LRU shared by every
request, and the operation limits' token counts and figures, one cache per schema; each sized
by the graphql settings."""

from __future__ import annotations

import warnings

import pytest
from strawberry.extensions import ParserCache, ValidationCache

from gateway.settings import load_settings
from schema.build import build_schema
from schema.cost import count_tokens
from schema.operation_limits import DocumentMeasures, OperationLimitsRule


def _of(kind: type, extensions: list) -> list:
    return [extension for extension in extensions if isinstance(extension, kind)]


def test_each_request_gets_its_own_extensions_over_one_shared_cache():
    with warnings.catch_warnings():
        # Extension instances shared by every request are deprecated (strawberry #4369).
        warnings.simplefilter("error", DeprecationWarning)
        schema = build_schema(document_cache_size=37)
    first, second = schema.get_extensions(), schema.get_extensions()
    for kind, cached in (
        (ParserCache, "cached_parse_document"),
        (ValidationCache, "cached_validate_document"),
    ):
        (one,), (other,) = _of(kind, first), _of(kind, second)
        assert one is not other  # a fresh extension per request
        assert getattr(one, cached) is getattr(other, cached)  # the same LRU behind both
        assert getattr(one, cached).cache_parameters()["maxsize"] == 37


def test_no_cache_when_its_size_is_zero():
    extensions = build_schema(document_cache_size=0).get_extensions()
    assert not _of(ParserCache, extensions) and not _of(ValidationCache, extensions)


def _measures(extensions: list) -> DocumentMeasures:
    (rule,) = _of(OperationLimitsRule, extensions)
    return rule._measures


def test_the_operation_limits_measure_through_one_cache_per_schema_sized_by_the_settings():
    schema = build_schema(document_cache_size=2, cached_document_max_chars=40)
    measures = _measures(schema.get_extensions())
    assert measures is _measures(schema.get_extensions())  # shared by every request
    assert build_schema(document_cache_size=2)._schema is not None
    for text in ["{ a }", "{ b }", "{ c }", "{ " + "d " * 30 + "}"]:
        assert measures.tokens(text, None) == count_tokens(text)
    info = measures._tokens.cache_info()
    assert (info.maxsize, info.currsize) == (2, 2)  # the long one (63 chars) not kept
    assert build_schema(operation_limits=False).get_extensions()
    assert not _of(OperationLimitsRule, build_schema(operation_limits=False).get_extensions())


def test_no_document_is_measured_from_memory_when_the_cache_size_is_zero():
    measures = _measures(build_schema(document_cache_size=0).get_extensions())
    measures.tokens("{ a }", None)
    assert measures._tokens.cache_info().currsize == 0


def test_the_settings_reach_the_hub_s_schema(sims, tmp_path, monkeypatch):
    import gateway.app
    from tests.test_telemetry import in_process_settings

    config = tmp_path / "switchboard.toml"
    config.write_text("[graphql]\ndocument_cache_size = 5\ncached_document_max_chars = 99\n")
    monkeypatch.setenv("SWITCHBOARD_GRAPHQL__CACHED_DOCUMENT_MAX_CHARS", "77")  # env wins
    built: list[DocumentMeasures] = []

    def recorded(*args, **kwargs):
        schema = build_schema(*args, **kwargs)
        built.append(_measures(schema.get_extensions()))
        return schema

    monkeypatch.setattr(gateway.app, "build_schema", recorded)
    settings = in_process_settings(sims, tmp_path, tracing_on=False)
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(config))  # in_process_settings drops it
    settings = settings.model_copy(update={"graphql": load_settings().graphql})
    gateway.app.create_app(settings)
    (measures,) = built
    assert (measures._maxsize, measures._max_chars) == (5, 77)
    monkeypatch.setenv("SWITCHBOARD_GRAPHQL__CACHED_DOCUMENT_MAX_CHARS", "-1")
    with pytest.raises(ValueError, match="cached_document_max_chars"):
        load_settings()
