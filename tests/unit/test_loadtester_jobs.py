"""spec.analysis.load as the API takes it, the job the adapter sends, and the bounds the
loadtester holds jobs to (all pure)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tidegate.adapters.loadtester import job_body
from tidegate.api import Load
from tidegate.load_headers import job_headers
from tidegate.loadtester import JobRefused, parse_job
from tidegate.ports import LoadError

URL = "http://{{ canaryService }}.{{ namespace }}.svc:80/"
VARIABLES = {"canaryService": "shop-canary", "namespace": "shop-ns"}


def test_load_defaults() -> None:
    load = Load.model_validate({"url": URL, "rate": 20})
    assert (load.method, load.headers, load.loadtester) == ("GET", {}, None)


@pytest.mark.parametrize(
    ("change", "text"),
    [
        ({"rate": 0}, "greater than or equal to 1"),
        ({"rate": 1001}, "less than or equal to 1000"),
        ({"url": "ftp://x/"}, "should match pattern"),
        ({"url": "http://{{ canary }}.svc/"}, "unknown variable {{ canary }}"),
        ({"method": "TRACE"}, "'GET'"),
        ({"headers": {"bad name": "x"}}, "invalid header name 'bad name'"),
        ({"headers": {"authorization": "x"}}, "'authorization'] looks like a credential"),
        ({"headers": {"X-Api-Key": "x"}}, "headersSecretRef"),
        ({"headers": {"X-Session-Token": "x"}}, "looks like a credential"),
        ({"headers": {"Cookie": "x"}}, "looks like a credential"),
        ({"headersSecretRef": {"name": ""}}, "at least 1 character"),
        ({"loadtester": "tidegate-loadtester:8080"}, "should match pattern"),
        ({"body": "x"}, "Extra inputs are not permitted"),
    ],
)
def test_load_refuses(change: dict[str, Any], text: str) -> None:
    with pytest.raises(ValidationError, match=text.replace("{", r"\{").replace("}", r"\}")):
        Load.model_validate({"url": URL, "rate": 20, **change})


def test_the_job_has_its_url_rendered() -> None:
    load = Load.model_validate(
        {"url": URL, "rate": 20, "method": "POST", "headers": {"X-Canary": "1"}}
    )
    assert job_body("shop-ns/shop", load, 9.0, VARIABLES) == {
        "id": "shop-ns/shop",
        "url": "http://shop-canary.shop-ns.svc:80/",
        "rate": 20,
        "duration": 9.0,
        "method": "POST",
        "headers": {"X-Canary": "1"},
    }


def test_a_url_with_a_variable_not_given_is_a_load_error() -> None:
    load = Load.model_validate({"url": URL, "rate": 20})
    with pytest.raises(LoadError, match="unknown variable") as raised:
        job_body("a/b", load, 9.0, {"namespace": "n"})
    assert raised.value.reason == "InvalidSpec"


JOB = {"id": "ns/shop", "url": "http://a.ns.svc/", "rate": 20, "duration": 9}


def test_a_job_within_bounds_is_taken() -> None:
    job = parse_job({**JOB, "headers": {"A": "b"}}, max_rate=100, max_duration=60)
    assert (job.id, job.rate, job.duration, job.method, job.headers) == (
        "ns/shop",
        20.0,
        9.0,
        "GET",
        {"A": "b"},
    )


@pytest.mark.parametrize(
    ("change", "text"),
    [
        ({"rate": 101}, "rate 101/s is above this loadtester's --max-rate 100"),
        ({"duration": 61}, "duration 61s is above this loadtester's --max-duration 60"),
        ({"rate": 0}, "rate must be greater than 0"),
        ({"rate": "fast"}, "rate must be a number"),
        ({"duration": True}, "duration must be a number"),
        ({"url": "a.ns.svc"}, "url must be an http:// or https:// URL"),
        ({"id": ""}, "id must be a string"),
        ({"method": "TRACE"}, "method must be one of"),
        ({"headers": {"A": 1}}, "headers must be an object of strings"),
    ],
)
def test_a_job_beyond_bounds_or_malformed_is_refused(change: dict[str, Any], text: str) -> None:
    with pytest.raises(JobRefused, match=text.replace("+", r"\+")):
        parse_job({**JOB, **change}, max_rate=100, max_duration=60)


def test_a_body_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(JobRefused, match="JSON object"):
        parse_job([JOB], max_rate=100, max_duration=60)


def test_the_operator_takes_a_default_loadtester_and_the_loadtester_its_bounds() -> None:
    from tidegate.cli import build_parser

    run = build_parser().parse_args(["run", "--loadtester-url", "http://lt:8080"])
    assert run.loadtester_url == "http://lt:8080"
    tester = build_parser().parse_args(
        ["loadtester", "--max-rate", "50", "--max-duration", "600", "--connect-to", "gw:8080"]
    )
    assert (tester.max_rate, tester.max_duration, tester.connect_to) == (50, 600, ("gw", 8080))
    assert tester.listen == ("0.0.0.0", 8080)


def test_headers_from_the_secret_join_the_specs_and_are_checked_by_key() -> None:
    load = Load.model_validate(
        {"url": URL, "rate": 1, "headers": {"X-Tenant": "a"}, "headersSecretRef": {"name": "s"}}
    )
    assert job_headers(load, {"Authorization": "Bearer x"}, "Secret ns/s") == {
        "X-Tenant": "a",
        "Authorization": "Bearer x",
    }
    # Without a ref, the Secret is not looked at.
    plain = Load.model_validate({"url": URL, "rate": 1, "headers": {"X-Tenant": "a"}})
    assert job_headers(plain, None, "unused") == {"X-Tenant": "a"}
    too_many = {f"X-{i}": "v" for i in range(32)}
    for secret, text in [
        (None, "Secret ns/s does not exist"),
        ({"a b": "v"}, "key 'a b' of Secret ns/s is not a header name"),
        ({"X-TENANT": "v"}, "is also in load.headers"),
        ({"X-K": "v" * 4097}, "longer than 4096"),
        ({"X-K": "v\x00"}, "line break or NUL"),
        (too_many, "33 headers"),
    ]:
        with pytest.raises(LoadError) as refused:
            job_headers(load, secret, "Secret ns/s")
        assert text in str(refused.value)
        assert "Bearer" not in str(refused.value) and "vvvv" not in str(refused.value)
