"""litefer serve under load on loopback, with misbehaving clients at the same time.

Bounded: 4 clients x 6 requests of a 512 x 512 JPEG, plus one client per fault. The server (see the
``serve_url`` fixture: 2 workers, 16 queued, 1 MiB uploads, 2 s body and header deadlines) must
answer every well-formed request with 200 (no 5xx), answer each fault with a 4xx or let it time
out, and still be healthy afterwards.
"""
import loadtest as L
from serve_support import astronaut_rgb, encode


def test_load_with_faults_no_5xx_and_every_fault_refused(serve_url, tmp_path):
    jpeg = encode(astronaut_rgb(), "JPEG", quality=90)
    status, card = L.get_json(serve_url, "/v1/model")
    assert status == 200
    load, faults = L.load_with_faults(serve_url, jpeg, clients=4, requests=6, limits=card["limits"])
    s = load.summary()
    assert s["requests"] == 24 and s["ok"] == 24, s["statuses"]
    assert s["server_errors"] == 0
    assert s["faces_per_answer"] == {"1": 24}
    assert s["p50_ms"] <= s["p95_ms"] <= s["p99_ms"] <= s["max_ms"]
    by_name = {f.key: f for f in faults}
    assert set(by_name) == set(L.FAULTS)
    for f in faults:
        assert f.ok, f
    expected = {"truncated": 422, "non_image": 415, "huge_dimensions": 422, "oversized": 413,
                "oversized_chunked": 413}
    for key, code in expected.items():
        assert by_name[key].status == code, by_name[key]
    # the slow clients are cut off by the deadlines, not left hanging
    for key in ("slow_body", "slow_headers"):
        f = by_name[key]
        assert f.status == 408 and f.seconds < card["limits"]["upload_timeout_s"] + 3, f
    status, health = L.get_json(serve_url, "/healthz")
    assert status == 200 and health["status"] == "ok" and health["inflight"] == 0
    # the server still answers normally after all that
    after = L.run_load(serve_url, jpeg, clients=1, requests=1)
    assert after.statuses == {200: 1}
    report = L.markdown_table([{"phase": "test", **s}], L.LOAD_COLS) + "\n\n" + \
        L.markdown_table([vars(f) for f in faults], L.FAULT_COLS)
    (tmp_path / "serve.md").write_text(report)
    assert report.count("\n") >= 2 + 2 + len(faults)


def test_overload_is_refused_with_503_and_retry_after(serve_model, tmp_path):
    """More concurrent clients than workers + queue: the excess gets 503 + Retry-After at once,
    everyone admitted gets 200, and nothing else fails."""
    from serve_support import serve

    jpeg = encode(astronaut_rgb(), "JPEG", quality=90)
    with serve(serve_model[1], tmp_path / "log.txt", "--workers", "1", "--queue", "1") as (url, _):
        load = L.run_load(url, jpeg, clients=6, requests=2)
        codes = dict(load.statuses)
        assert set(codes) <= {200, 503}, codes
        assert codes.get(200, 0) >= 2 and codes.get(503, 0) >= 1, codes
        status, health = L.get_json(url, "/healthz")
        assert health["stats"]["rejected_busy"] == codes[503]


def test_memory_is_returned_after_large_images(serve_url):
    """39.7-MP PNGs (126 KB each, inside the 40-MP limit), two at a time: the server's idle RSS grew
    by about 155 MB per image and stayed there before (620 MB after four). Now what remains is
    scratch that does not grow with the number of images: 170-350 MB here, depending on which
    threads' heaps the decoded images and their search tiles passed through. So a first pair, then
    four more: the four add less than two images decoded (2 x 119 MB), all six less than four (the
    old growth: over 900 MB)."""
    image_mib = 7280 * 5450 * 3 / 2**20
    first = L.large_image_phase(serve_url, 2, concurrent=2, idle_s=0.5)
    if first["rss_before_mib"] is None:
        import pytest
        pytest.skip("no /proc on this system: the server cannot report its resident memory")
    m = L.large_image_phase(serve_url, 4, concurrent=2, idle_s=0.5)
    assert first["statuses"] == {"200": 2} and m["statuses"] == {"200": 4}, (first, m)
    assert m["rss_after_idle_mib"] - m["rss_before_mib"] < 2 * image_mib, (first, m)
    assert m["rss_after_idle_mib"] - first["rss_before_mib"] < 4 * image_mib, (first, m)
