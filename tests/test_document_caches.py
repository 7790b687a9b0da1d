"""The parse and validation caches: strawberry's factories, one LRU shared by every request."""

from __future__ import annotations

import warnings

from strawberry.extensions import ParserCache, ValidationCache

from schema.build import build_schema


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
