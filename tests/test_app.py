"""Unit tests of the practice project's app (app/benchapp): images, benchmark rows, course models, API calls.

Everything runs offline and fast; the API calls go to a stub server on 127.0.0.1 (no canned answers in the
app itself: the stub stands in for a provider so the real HTTP code path runs)."""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from PIL import Image

from common import checkpoints
from common import reference_models as ref
from common.course import repo_root
from common.datasets import SAMPLE_PHOTOS, generate_shapes
from common.dino_eval import attention_iou
from common.plotting import render_checking_glyphs

sys.path.insert(0, str(repo_root() / "app"))

from benchapp import InputError, apis, bench, course_models, images, ui  # noqa: E402

FAKE_KEY = "sk-test-0123456789abcdefSECRET"


# ---------------------------------------------------------------------------------------------------- images
def save(image: Image.Image, tmp_path, name: str):
    path = tmp_path / name
    image.save(path)
    return path


def test_no_image_and_not_an_image(tmp_path):
    with pytest.raises(InputError, match="No image"):
        images.load_image(None)
    text = tmp_path / "notes.png"
    text.write_text("hello, I am not a picture")
    with pytest.raises(InputError, match="not an image file"):
        images.load_image(text)


def test_truncated_image_is_refused_with_a_message(tmp_path):
    rng = np.random.default_rng(0)
    path = save(Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)), tmp_path, "full.png")
    cut = tmp_path / "cut.png"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InputError, match="damaged or truncated"):
        images.load_image(cut)


def test_huge_image_refused_from_its_header(tmp_path):
    path = save(Image.new("1", (7000, 7000)), tmp_path, "huge.png")  # 49 Mpx, a small file
    with pytest.raises(InputError, match=f"limit is {images.MAX_PIXELS:,} pixels"):
        images.load_image(path)


def test_large_image_downscaled_with_a_notice(tmp_path):
    loaded = images.load_image(save(Image.new("RGB", (3000, 2000), (10, 20, 30)), tmp_path, "big.png"))
    assert loaded.pixels.shape == (683, 1024, 3)
    assert "downscaled to 1024×683" in loaded.note


@pytest.mark.parametrize("mode", ["L", "1", "P", "I;16", "CMYK"])
def test_other_modes_become_rgb(tmp_path, mode):
    image = Image.new(mode, (40, 30))
    ext = "tif" if mode == "CMYK" else "png"
    loaded = images.load_image(save(image, tmp_path, f"img.{ext}"))
    assert loaded.pixels.shape == (30, 40, 3) and loaded.pixels.dtype == np.uint8
    assert "RGB" in loaded.note


def test_rgba_is_composited_over_white(tmp_path):
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    image.putpixel((0, 0), (255, 0, 0, 255))
    loaded = images.load_image(save(image, tmp_path, "alpha.png"))
    assert tuple(loaded.pixels[0, 0]) == (255, 0, 0)
    assert tuple(loaded.pixels[3, 3]) == (255, 255, 255)
    assert "transparency" in loaded.note
    assert images.check_pixels(np.asarray(image)).shape == (4, 4, 3)


def test_square_undoes_the_display_enlargement_exactly():
    raw = torch.rand(3, 32, 32)
    pixels = images.enlarge(images.to_pixels(raw), 8)
    back = images.square(pixels, 32)
    assert torch.allclose(back, images.to_tensor(images.to_pixels(raw)), atol=1e-6)
    assert images.square(np.zeros((50, 80, 3), np.uint8), 32).shape == (3, 32, 32)


# ---------------------------------------------------------------------------------------------------- bench
def test_zoo_is_lab_4_3s_families_in_both_sizes():
    from common.model_selection import FAMILIES

    zoo = bench.zoo()
    assert set(zoo) == {f.quick for f in FAMILIES.values()} | {f.full for f in FAMILIES.values()}
    assert {m.family for m in zoo.values()} == set(FAMILIES)
    assert zoo["vit_tiny_patch16_224"].size == "tiny/small" and zoo["vit_base_patch16_224"].size == "base"


@pytest.mark.parametrize(
    "names, size, batch, message",
    [
        ([], 224, 1, "at least one model"),
        (["resnet18", "not_a_model"], 224, 1, "Unknown model"),
        (["resnet18"], 8, 1, "between 32 and 512"),
        (["resnet18"], 224, 0, "between 1 and 64"),
        (["resnet18"], "big", 1, "integers"),
    ],
)
def test_bad_requests_are_refused(names, size, batch, message):
    with pytest.raises(InputError, match=message):
        bench.check_request(names, size, batch)


def test_memory_estimate_uses_the_meta_device_and_counts():
    from common.benchmark import count_parameters

    estimate = bench.memory_estimate("resnet18", 64, 2)
    params = count_parameters(bench.build("resnet18", 64, on="meta"))
    assert estimate.params == params and estimate.weights == 4 * params
    assert estimate.inputs == 4 * 2 * 3 * 64 * 64
    assert estimate.activations > 0 and estimate.flops > 0
    assert bench.memory_estimate("resnet18", 64, 4).activations == 2 * estimate.activations


def test_an_architecture_that_rejects_the_size_gets_a_message(monkeypatch):
    def broken(name, img_size, **kwargs):
        raise RuntimeError("Input height (40) doesn't match model (32).\nmore detail")

    monkeypatch.setattr(bench, "build", broken)
    with pytest.raises(InputError, match=r"does not accept input size 40 px \(Input height"):
        bench.memory_estimate("resnet18", 40, 1)


def test_too_big_a_run_is_refused_before_allocating(monkeypatch):
    built = []
    real_build = bench.build

    def spy(name, img_size, *, on="cpu", pretrained=False):
        built.append(str(on))
        return real_build(name, img_size, on=on, pretrained=pretrained)

    monkeypatch.setattr(bench, "build", spy)
    monkeypatch.setattr(bench, "free_memory_bytes", lambda device="cpu": 10 * 2**20)  # 10 MiB free
    table, messages, nets = bench.run_benchmark(["resnet18"], 224, 64)
    assert table.empty and not nets
    assert "refused before allocating" in messages[0] and "50% of the 10 MiB free" in messages[0]
    assert "Formula: need = 4 B × parameters" in messages[0]
    assert built == ["meta"]  # only the shape-only model was built


def test_a_tiny_benchmark_measures_every_column_quickly():
    start = time.perf_counter()
    calls = []
    table, messages, nets = bench.run_benchmark(
        ["resnet18", "deit_tiny_patch16_224"], 64, 2, min_run_time=0.05, progress=lambda f, d: calls.append(f)
    )
    assert time.perf_counter() - start < 60
    assert messages == [] and list(table["model"]) == ["resnet18", "deit_tiny_patch16_224"]
    assert list(table.columns) == list(bench.COLUMNS)
    assert (
        (table[["params_M", "GFLOPs_per_image", "latency_ms", "throughput_img_s", "peak_MiB"]] > 0)
        .all()
        .all()
    )
    assert (table["estimate_MiB"] >= table["peak_MiB"]).all()  # the refusal check's estimate bounds the peak
    assert table["weights"].eq("random").all() and calls[-1] == 1.0
    assert abs(table.loc[0, "params_M"] - 11.69) < 0.01  # resnet18: 11.69 M parameters
    fig = bench.chart(table)
    assert len(fig.axes) == 3
    render_checking_glyphs(fig)  # every label has a glyph in the font (no empty boxes)
    assert bench.top5(nets["resnet18"], np.zeros((50, 60, 3), np.uint8), 64) is not None


@pytest.mark.parametrize("runtime", ["onnxruntime", "int8"])
def test_the_runtime_choice_measures_the_exported_model(runtime):
    table, messages, nets = bench.run_benchmark(["resnet18"], 32, 2, min_run_time=0.05, runtime=runtime)
    assert messages == [] and list(table.columns) == list(bench.COLUMNS)
    row = table.iloc[0]
    assert row["runtime"] == runtime and row["setup_s"] > 0 and row["latency_ms"] > 0
    assert np.isnan(row["peak_MiB"])  # ONNX Runtime allocates outside torch: not measured, not faked
    # fp32 ONNX Runtime equals eager to rounding; int8 weights move the logits (random weights: small ones)
    assert row["max_dlogit_vs_eager"] < (1e-3 if runtime == "onnxruntime" else 1.0)
    eager_mb = sum(p.numel() for p in nets["resnet18"].parameters()) * 4 / 1e6
    assert row["file_MB"] < (0.4 if runtime == "int8" else 1.1) * eager_mb
    render_checking_glyphs(bench.chart(table))


def test_an_unknown_runtime_is_refused():
    with pytest.raises(InputError, match="Unknown runtime 'tensorrt'"):
        bench.check_request(["resnet18"], 64, 1, "tensorrt")


def test_top5_lists_imagenet_classes_and_skips_headless_backbones():
    torch.manual_seed(0)
    net = bench.build("resnet18", 64)
    top = bench.top5(net, np.full((80, 80, 3), 127, np.uint8), 64)
    assert len(top) == 5 and all(isinstance(label, str) and 0 <= p <= 1 for label, p in top)
    assert [p for _, p in top] == sorted((p for _, p in top), reverse=True)
    assert (
        bench.top5(bench.build("vit_small_patch14_dinov2", 56), np.zeros((56, 56, 3), np.uint8), 56) is None
    )


def test_offline_pretrained_request_falls_back_to_random_weights(monkeypatch):
    monkeypatch.setenv("COURSE_OFFLINE", "1")
    assert bench.network_available() is False
    message, table, fig, csv, predictions = ui.on_benchmark(
        ["resnet18"], 32, 1, 0.05, True, None, progress=lambda *a, **k: None
    )
    assert "Offline" in message and "random weights used" in message
    assert list(table["weights"]) == ["random"] and predictions == ""
    assert open(csv).read().startswith("model,family,size,weights")


def test_ui_benchmark_handler_reports_bad_input_without_raising():
    message, *_ = ui.on_benchmark(["nope"], 224, 1, 0.1, False, None, progress=lambda *a, **k: None)
    assert message.startswith("⚠") and "Unknown model" in message


# ---------------------------------------------------------------------------------------------------- course models
def test_examples_are_generated_like_each_models_training_data():
    keys = [key for _, key in course_models.example_keys()]
    assert sum(k.startswith("vit:") for k in keys) == sum(k.startswith("dino:") for k in keys) == 6
    assert {k.split(":")[1] for k in keys if k.startswith("photo:")} == set(SAMPLE_PHOTOS)
    plain = generate_shapes(6, 32, seed=0, split="test", background=ref.VIT_BACKGROUND)
    textured = generate_shapes(6, 32, seed=0, split="test", **ref.DINO_DATA)
    for kind, data in (("vit", plain), ("dino", textured)):
        ex = course_models.example(f"{kind}:3")
        assert np.array_equal(ex.pixels, images.enlarge(images.to_pixels(data.images[3]), 8))
        assert np.array_equal(ex.mask, data.masks[3].numpy())
        assert ex.true_class == data.classes[int(data.labels[3])]
    assert course_models.example("photo:chelsea").mask is None
    with pytest.raises(InputError, match="Unknown example"):
        course_models.example("vit:99")


def test_course_vit_classifies_its_examples():
    for i in range(6):
        ex = course_models.example(f"vit:{i}")
        result = course_models.classify(ex.pixels)
        assert max(result.probabilities, key=result.probabilities.get) == ex.true_class
        assert abs(sum(result.probabilities.values()) - 1) < 1e-5
    assert result.heads.shape == (4, 32, 32) and result.rollout.shape == (32, 32)
    assert len(course_models.vit_figure(result).axes) == 6
    render_checking_glyphs(course_models.vit_figure(result))


def test_generated_shapes_are_familiar_and_photos_are_not():
    data = generate_shapes(
        200, 32, seed=0, split="test", background=ref.VIT_BACKGROUND
    )  # not the calibration split
    familiar = [course_models.familiarity(image).familiar for image in data.images]
    assert np.mean(familiar) >= 0.99
    for name in SAMPLE_PHOTOS:
        ex = course_models.example(f"photo:{name}")
        assert not course_models.familiarity(images.square(ex.pixels, 32)).familiar, name


def test_the_page_warns_when_the_image_is_not_a_generated_shape():
    probabilities, _, message = ui.on_classify(course_models.example("photo:coffee").pixels)
    assert probabilities is not None  # the prediction is still shown, under the warning
    assert message.startswith("⚠") and "knows only six generated shapes" in message
    assert "confidence means nothing here" in message
    _, _, message = ui.on_classify(course_models.example("vit:0").pixels)
    assert message.startswith("✓") and "knows only" not in message


def test_course_dino_iou_matches_the_course_evaluation():
    ex = course_models.example("dino:2")
    result = course_models.dino_attention(ex.pixels, course_models.matching_mask(ex.pixels, ex))
    course = course_models.dino()
    x = course.normalize(images.square(ex.pixels, 32))[None]
    expected = attention_iou(course.model, x, torch.from_numpy(ex.mask)[None])[0]
    np.testing.assert_allclose(result.iou, expected, atol=1e-6)
    assert result.masks.shape == (4, 32, 32) and result.masks.dtype == bool
    photo = course_models.example("photo:coffee")
    assert course_models.matching_mask(photo.pixels, ex) is None  # another image: no true mask
    figure, message = ui.on_dino(ex.pixels, ex)
    assert "IoU with the true mask" in message
    render_checking_glyphs(figure)
    assert "no true mask" in ui.on_dino(photo.pixels, None)[1]


def test_missing_checkpoint_says_run_make_checkpoints(monkeypatch, tmp_path):
    monkeypatch.setattr(checkpoints, "course_dir", lambda: tmp_path)
    course_models.vit.cache_clear()
    course_models.dino.cache_clear()
    try:
        with pytest.raises(
            course_models.CheckpointMissing, match="checkpoint missing: run `make checkpoints`"
        ):
            course_models.vit()
        probs, fig, message = ui.on_classify(course_models.example("vit:0").pixels)
        assert probs is None and "checkpoint missing: run `make checkpoints`" in message
        assert "checkpoint missing" in ui.course_notice()
    finally:
        course_models.vit.cache_clear()
        course_models.dino.cache_clear()


def test_course_handlers_without_an_image():
    assert "No image" in ui.on_classify(None)[2]
    assert "No image" in ui.on_dino(None, None)[1]
    preview, notice, pixels = ui.on_upload(None)
    assert preview is None and pixels is None


# ---------------------------------------------------------------------------------------------------- APIs
NO_KEYS = {"PATH": "/usr/bin"}


def test_no_key_names_the_variable_and_calls_nothing(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("nothing may be sent without a key")

    monkeypatch.setattr(urllib.request, "urlopen", fail)
    for name in ("GEMINI_API_KEY", "OPENAI_API_KEY", "LLAMA_API_KEY", "LLAMA_API_BASE"):
        monkeypatch.delenv(name, raising=False)
    page = ui.on_ask(np.zeros((8, 8, 3), np.uint8), "what is this?", list(apis.PROVIDERS))
    for name in ("`GEMINI_API_KEY`", "`OPENAI_API_KEY`", "`LLAMA_API_BASE` and `LLAMA_API_KEY`"):
        assert name in page
    assert page.count("Nothing was called") == 3 and "response time" not in page
    assert apis.missing(apis.PROVIDERS["llama"], NO_KEYS) == ["LLAMA_API_BASE", "LLAMA_API_KEY"]


def test_requests_carry_keys_in_headers_only():
    env = {"GEMINI_API_KEY": FAKE_KEY, "OPENAI_API_KEY": FAKE_KEY, "LLAMA_API_KEY": FAKE_KEY,
           "LLAMA_API_BASE": "https://llama.example/v1/", "LLAMA_MODEL": "my-llama"}  # fmt: skip
    pixels = np.zeros((16, 16, 3), np.uint8)
    gemini = apis.build_request(apis.PROVIDERS["gemini"], pixels, "hi", env)
    assert gemini.full_url.endswith("/models/gemini-2.5-flash:generateContent")
    assert gemini.get_header("X-goog-api-key") == FAKE_KEY and FAKE_KEY not in gemini.full_url
    assert json.loads(gemini.data)["contents"][0]["parts"][1]["inline_data"]["mime_type"] == "image/jpeg"
    openai = apis.build_request(apis.PROVIDERS["openai"], pixels, "hi", env)
    assert openai.full_url == "https://api.openai.com/v1/chat/completions"
    assert openai.get_header("Authorization") == f"Bearer {FAKE_KEY}"
    llama = apis.build_request(apis.PROVIDERS["llama"], pixels, "hi", env)
    assert llama.full_url == "https://llama.example/v1/chat/completions"
    assert json.loads(llama.data)["model"] == "my-llama"
    assert all(FAKE_KEY not in line for line in apis.status_lines(env))


def test_scrub_removes_keys_and_key_shaped_strings():
    env = {"OPENAI_API_KEY": FAKE_KEY}
    text = (
        f"bad key {FAKE_KEY}; Authorization: Bearer abc.def; url?key=AIzaSyA1234567890abcdefghijklmnopqrstu"
    )
    clean = apis.scrub(text, env)
    assert FAKE_KEY not in clean and "abc.def" not in clean and "AIzaSy" not in clean


class _Stub(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint on 127.0.0.1: answers from the request it got, or fails echoing the key."""

    requests: list[dict] = []
    fail = False

    def do_POST(self):  # noqa: N802 - the http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"auth": self.headers.get("Authorization"), "body": body})
        if type(self).fail:
            payload, status = {"error": f"invalid key {self.headers.get('Authorization')}"}, 401
        else:
            n_parts = len(body["messages"][0]["content"])
            payload, status = {"choices": [{"message": {"content": f"received {n_parts} parts"}}]}, 200
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def stub_server():
    _Stub.requests, _Stub.fail = [], False
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_a_real_call_shows_the_answer_and_its_time(stub_server, monkeypatch):
    monkeypatch.delenv("COURSE_OFFLINE", raising=False)
    env = {"LLAMA_API_BASE": stub_server, "LLAMA_API_KEY": FAKE_KEY}
    answer = apis.call("llama", np.zeros((8, 8, 3), np.uint8), "what?", env=env)
    assert answer.text == "received 2 parts" and answer.seconds > 0
    assert _Stub.requests[0]["auth"] == f"Bearer {FAKE_KEY}"
    monkeypatch.setenv("LLAMA_API_BASE", stub_server)
    monkeypatch.setenv("LLAMA_API_KEY", FAKE_KEY)
    page = ui.on_ask(np.zeros((8, 8, 3), np.uint8), "", ["llama"])
    assert "received 2 parts" in page and "response time" in page


def test_errors_never_show_the_key(stub_server, monkeypatch):
    _Stub.fail = True
    monkeypatch.setenv("LLAMA_API_BASE", stub_server)
    monkeypatch.setenv("LLAMA_API_KEY", FAKE_KEY)
    monkeypatch.delenv("COURSE_OFFLINE", raising=False)
    page = ui.on_ask(np.zeros((8, 8, 3), np.uint8), "hi", ["llama"])
    assert "HTTP 401" in page and FAKE_KEY not in page and "response time" not in page


def test_offline_or_unreachable_fails_fast_and_sends_nothing(stub_server):
    env = {"LLAMA_API_BASE": stub_server, "LLAMA_API_KEY": FAKE_KEY, "COURSE_OFFLINE": "1"}
    with pytest.raises(apis.ApiError, match="offline"):
        apis.call("llama", np.zeros((8, 8, 3), np.uint8), env=env)
    assert _Stub.requests == []
    closed = {"LLAMA_API_BASE": "http://127.0.0.1:9/v1", "LLAMA_API_KEY": FAKE_KEY}  # discard port: closed
    start = time.perf_counter()
    with pytest.raises(apis.ApiError, match="unreachable"):
        apis.call("llama", np.zeros((8, 8, 3), np.uint8), env=closed)
    assert time.perf_counter() - start < apis.PROBE_TIMEOUT_S + 1


def test_the_page_builds_offline(monkeypatch):
    monkeypatch.setenv("COURSE_OFFLINE", "1")
    demo = ui.build_demo()
    assert demo.title == ui.TITLE
    text, update = ui.network_notice()
    assert "Offline" in text and update["interactive"] is False


# ---------------------------------------------------------------------------------------------------- deployment
def pins(path) -> dict[str, str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return dict(line.split("==") for line in lines if "==" in line)


def test_space_requirements_match_the_course_pins():
    root, space = pins(repo_root() / "requirements.txt"), pins(repo_root() / "app" / "requirements.txt")
    assert space and all(root[name] == version for name, version in space.items())
    header = (repo_root() / "app" / "README.md").read_text().split("---")[1]
    meta = dict(line.split(": ", 1) for line in header.strip().splitlines())
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    assert meta["sdk_version"] == pins(repo_root() / "requirements-app.txt")["gradio"]


def test_the_space_layout_runs_unchanged(tmp_path):
    """app/ as the Space's root, with copies of common/ and checkpoints/ beside app.py (app/README.md)."""
    import shutil
    import subprocess

    root = repo_root()
    shutil.copy(root / "app" / "app.py", tmp_path)
    for src, dst in ((root / "app" / "benchapp", "benchapp"), (root / "common", "common")):
        shutil.copytree(src, tmp_path / dst, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(root / "checkpoints", tmp_path / "checkpoints", ignore=shutil.ignore_patterns(".*"))
    code = (
        "import runpy, sys; runpy.run_path('app.py', run_name='space');"
        "import common; from benchapp import course_models as cm;"
        "print(common.__file__); print(cm.vit().entry['file'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True
    ).stdout.split()
    assert out == [str(tmp_path / "common" / "__init__.py"), "vit_shapes.pt"]
