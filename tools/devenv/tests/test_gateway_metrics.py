from prometheus_client import generate_latest

from tidegate_devenv.gateway import GatewayMetrics


def samples(metrics: GatewayMetrics) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "gateway_requests_total":
                out[f"{sample.labels['backend']}/{sample.labels['code']}"] = sample.value
    return out


def test_a_backends_first_request_creates_its_error_series_at_zero() -> None:
    metrics = GatewayMetrics()
    metrics.observe("ns", "shop", "shop-canary", 200, 0.01)
    assert samples(metrics) == {
        "shop-canary/200": 1.0,
        "shop-canary/500": 0.0,
        "shop-canary/502": 0.0,
        "shop-canary/503": 0.0,
    }
    metrics.observe("ns", "shop", "shop-canary", 500, 0.01)
    metrics.observe("ns", "shop", "shop-canary", 418, 0.01)
    assert samples(metrics)["shop-canary/500"] == 1.0
    assert samples(metrics)["shop-canary/418"] == 1.0
    assert b'backend="shop-stable"' not in generate_latest(metrics.registry)
