"""The page: three tabs (model benchmark, the course's own models, multimodal APIs), in Korean and English.

Every handler returns messages for the page instead of raising: bad input gets its reason (``InputError``),
anything unexpected a one-line error (the traceback goes to the server's console, never to the page).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no telemetry calls

import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402

from benchapp import InputError, apis, bench, course_models  # noqa: E402
from benchapp.images import MAX_FILE_MB, MAX_PIXELS, MAX_SIDE, check_pixels, load_image  # noqa: E402
from common.checkpoints import read_manifest  # noqa: E402

log = logging.getLogger("benchapp")

TITLE = "비전 모델 벤치마크 / Vision-model benchmark"
INTRO = f"""# {TITLE}
어텐션과 비전 트랜스포머 과정, 4주차 실습 프로젝트 / The attention & Vision Transformer course, week-4 practice
project: lab 4.3's model zoo measured live on this machine, the course's own trained ViT and DINO, and
vision-language APIs. 모든 수치는 지금 이 컴퓨터에서 측정합니다 / every number is measured now, on this machine.

이미지 제한 / Image limits: files up to {MAX_FILE_MB} MB; more than {MAX_PIXELS:,} pixels is refused; a long side
above {MAX_SIDE} px is downscaled; greyscale and RGBA are converted to RGB (each with a notice)."""


def warn(message: str) -> str:
    return f"⚠ {message}"


def unexpected(err: Exception, what: str) -> str:
    log.exception("%s failed", what)  # server console only
    first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
    return warn(
        f"{what}: 예기치 않은 오류 / unexpected error ({type(err).__name__}{': ' + first if first else ''})."
    )


# ------------------------------------------------------------------------------------------------ images
def on_upload(path):
    """An uploaded file -> (preview, notice, pixels); a bad file clears the image and says why."""
    if path is None:
        return None, "", None
    try:
        loaded = load_image(path)
    except InputError as err:
        return None, warn(str(err)), None
    notice = f"ℹ {loaded.note}" if loaded.notes else "✓ 이미지 준비됨 / image ready."
    return loaded.pixels, notice, loaded.pixels


# ------------------------------------------------------------------------------------------------ tab 1
def network_notice() -> tuple[str, dict]:
    if bench.network_available():
        return (
            "온라인 / **Online**: tick *pretrained weights* to load the released weights and see top-5 "
            "ImageNet predictions for your image.",
            gr.update(interactive=True),
        )
    return (
        "오프라인 / **Offline** (no network, or `COURSE_OFFLINE=1`): the same architectures are benchmarked "
        "with random weights — cost does not depend on the weights — and no predictions are shown. "
        "사전학습 가중치 없이 무작위 가중치로 측정합니다.",
        gr.update(value=False, interactive=False),
    )


def on_benchmark(
    names,
    img_size,
    batch,
    min_run_time,
    pretrained,
    pixels,
    runtime="eager",
    progress=gr.Progress(),  # noqa: B008
):
    """-> (message, table, chart, csv path, predictions)."""
    empty = (pd.DataFrame(), None, None, "")
    notes = []
    try:
        if pretrained and not bench.network_available():
            notes.append("오프라인 / Offline: pretrained weights cannot be downloaded; random weights used.")
            pretrained = False
        table, messages, nets = bench.run_benchmark(
            names,
            img_size,
            batch,
            min_run_time=float(min_run_time),
            pretrained=bool(pretrained),
            progress=lambda fraction, desc: progress(fraction, desc=desc),
            runtime=runtime,
        )
    except InputError as err:
        return (warn(str(err)), *empty)
    except Exception as err:  # noqa: BLE001 - the page gets one line, the console the traceback
        return (unexpected(err, "benchmark"), *empty)
    notes += [warn(m) for m in messages]
    if not table.empty and (table["latency_runs"] < 5).any():
        notes.append(
            "ℹ 측정 횟수가 적습니다 / few timed runs for some models (see latency_runs): raise the seconds per "
            "measurement for a steadier median and IQR."
        )
    if table.empty:
        return ("\n\n".join(notes) or warn("nothing measured"), *empty)
    csv_path = Path(tempfile.mkdtemp(prefix="benchmark-")) / "benchmark.csv"
    table.to_csv(csv_path, index=False)
    notes.insert(
        0,
        f"✓ {len(table)}개 모델 측정 완료 / measured {len(table)} model(s) on {bench.RUNTIME_LABELS[runtime]}: "
        f"latency at batch 1 (median, IQR), throughput at batch {int(batch)}, peak memory "
        f"{'at that batch' if runtime == 'eager' else '(eager only: not seen outside torch ops, left empty)'}; "
        "FLOPs per image (FlopCounterMode); setup_s = compile or export time, paid once before timing; "
        "max_dlogit_vs_eager = the largest logit difference from eager on the timed batch.",
    )
    predictions = ""
    if pretrained:
        predictions = top5_markdown(nets, pixels, int(img_size))
    return "\n\n".join(notes), bench.display_table(table), bench.chart(table), str(csv_path), predictions


def top5_markdown(nets: dict, pixels, img_size: int) -> str:
    if pixels is None:
        return "ℹ top-5: 이미지를 올리면 예측을 보여줍니다 / upload an image to see top-5 predictions."
    lines = ["### Top-5 (ImageNet, pretrained)"]
    for name, net in nets.items():
        try:
            top = bench.top5(net, check_pixels(pixels), img_size)
        except Exception as err:  # noqa: BLE001
            lines.append(unexpected(err, f"top-5 of {name}"))
            continue
        if top is None:
            lines.append(
                f"- **{name}**: 분류 헤드 없음 / no ImageNet classifier head (a self-supervised backbone)."
            )
        else:
            lines.append(f"- **{name}**: " + "; ".join(f"{label} ({p:.1%})" for label, p in top))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ tab 2
def course_notice() -> str:
    manifest = read_manifest()
    lines = []
    for name, what, metric in (
        ("vit_shapes", "ViT (lab 4.1)", "test_accuracy"),
        ("dino_shapes", "DINO (lab 4.2)", "teacher_iou"),
    ):
        entry = manifest.get(name)
        path = course_models.checkpoints.course_dir() / (entry or {}).get("file", f"{name}.pt")
        if entry is None or not path.exists():
            lines.append(f"- {what}: ⚠ 체크포인트 없음 / checkpoint missing: run `make checkpoints`.")
        else:
            value = entry.get("metrics", {}).get(metric)
            lines.append(f"- {what}: `{path.name}`, {metric} {value} (manifest, {entry.get('date', '?')}).")
    return "\n".join(lines)


def on_example(key):
    """-> (cleared upload, preview, notice, pixels, held example)."""
    try:
        ex = course_models.example(key)
    except InputError as err:
        return None, None, warn(str(err)), None, None
    except Exception as err:  # noqa: BLE001
        return None, None, unexpected(err, "example"), None, None
    notice = f"ℹ {ex.label}"
    if ex.true_class:
        notice += f" — 정답 / true class: **{ex.true_class}**; true mask available for DINO's IoU."
    return None, ex.pixels, notice, ex.pixels, ex


def on_course_upload(path):
    preview, notice, pixels = on_upload(path)
    return preview, notice, pixels, None  # an upload has no true mask


def on_classify(pixels):
    """-> (probabilities, figure, message)."""
    try:
        result = course_models.classify(check_pixels(pixels))
    except InputError as err:
        return None, None, warn(str(err))
    except Exception as err:  # noqa: BLE001
        return None, None, unexpected(err, "ViT")
    best = max(result.probabilities, key=result.probabilities.get)
    message = (
        f"✓ ViT 예측 / prediction: **{best}** ({result.probabilities[best]:.1%}). Heads: the last block's "
        "CLS attention per head; rollout: all blocks (Abnar & Zuidema). The image's centre square is "
        "averaged to 32×32 px and standardised with the checkpoint's mean/std."
    )
    if result.familiarity is not None and not result.familiarity.familiar:
        message = result.familiarity.warning() + "\n\n" + message
    return result.probabilities, course_models.vit_figure(result), message


def on_dino(pixels, held):
    """-> (figure, message)."""
    try:
        pixels = check_pixels(pixels)
        mask = course_models.matching_mask(pixels, held)
        result = course_models.dino_attention(pixels, mask)
    except InputError as err:
        return None, warn(str(err))
    except Exception as err:  # noqa: BLE001
        return None, unexpected(err, "DINO")
    message = (
        f"✓ DINO 교사 마지막 블록 / teacher's last block: {len(result.attention)} heads; masks keep the patches "
        f"holding {course_models.MASS:.0%} of each head's CLS attention."
    )
    if result.iou is not None:
        per_head = ", ".join(f"{v:.2f}" for v in result.iou)
        message += f" IoU with the true mask per head: {per_head} (mean {result.iou.mean():.2f}, best {result.iou.max():.2f})."
    else:
        message += " 실제 마스크 없음 / no true mask for this image (pick a generated example to see IoU)."
    if held is not None and held.key.startswith("vit:"):
        message += (
            " Note: this example is a plain shape (the ViT's data); DINO was trained on textured shapes on a camouflage"
            " background."
        )
    return course_models.dino_figure(result), message


# ------------------------------------------------------------------------------------------------ tab 3
def api_notice() -> str:
    return (
        "환경 변수로만 설정합니다 / Configured only through environment variables (never stored or shown):\n"
        + "\n".join(apis.status_lines())
    )


def on_ask(pixels, prompt, providers) -> str:
    if pixels is None:
        return warn("이미지가 없습니다 / No image: upload one first.")
    if not providers:
        return warn("API를 하나 이상 고르세요 / Choose at least one API.")
    blocks = []
    for key in providers:
        provider = apis.PROVIDERS.get(key)
        label = provider.label if provider else str(key)
        if provider and (gaps := apis.missing(provider)):
            need = " and ".join(f"`{g}`" for g in gaps)
            blocks.append(f"### {label}\n⚠ 설정 필요 / not configured: set {need}. Nothing was called.")
            continue
        try:
            answer = apis.call(key, check_pixels(pixels), prompt)
        except (InputError, apis.ApiError) as err:
            blocks.append(f"### {label}\n{warn(apis.scrub(str(err)))}")
            continue
        except Exception as err:  # noqa: BLE001 - no traceback: it could hold request details
            blocks.append(
                f"### {label}\n{warn(apis.scrub(f'unexpected error ({type(err).__name__}: {err})'))}"
            )
            continue
        blocks.append(
            f"### {label}\n{answer.text}\n\n*model `{answer.model}`, 응답 시간 / response time "
            f"{answer.seconds:.2f} s*"
        )
    return "\n\n".join(blocks)


# ------------------------------------------------------------------------------------------------ layout
def image_input(label: str):
    """Upload + preview + notice + the pixels held for the handlers."""
    upload = gr.File(label=label, type="filepath", file_count="single")
    preview = gr.Image(label="미리보기 / preview", interactive=False, height=220)
    notice = gr.Markdown()
    pixels = gr.State(None)
    return upload, preview, notice, pixels


def build_demo() -> gr.Blocks:
    zoo = bench.zoo()
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(INTRO)
        with gr.Tab("① 모델 벤치마크 / Model benchmark", elem_id="tab-benchmark"):
            net_status = gr.Markdown("네트워크 확인 중 / checking the network…", elem_id="network-status")
            with gr.Row():
                with gr.Column(scale=2):
                    models = gr.CheckboxGroup(
                        choices=[(bench.choice_label(m), m.name) for m in zoo.values()],
                        value=["resnet18"],
                        label="모델 / Models (lab 4.3's zoo: tiny/small and base of each family)",
                        elem_id="bench-models",
                    )
                    with gr.Row():
                        img_size = gr.Slider(
                            bench.MIN_SIZE, bench.MAX_SIZE, value=224, step=16,
                            label="입력 크기 / input size (px)", elem_id="bench-size",
                        )  # fmt: skip
                        batch = gr.Slider(
                            1,
                            bench.MAX_BATCH,
                            value=4,
                            step=1,
                            label="배치 / batch size",
                            elem_id="bench-batch",
                        )
                        min_time = gr.Slider(
                            0.1, 2.0, value=0.2, step=0.05,
                            label="측정 시간 / seconds per measurement", elem_id="bench-time",
                        )  # fmt: skip
                    runtime = gr.Radio(
                        choices=[(label, key) for key, label in bench.RUNTIME_LABELS.items()],
                        value="eager",
                        label="런타임 / runtime (lab 4.5: common.deployment)",
                        elem_id="bench-runtime",
                    )
                    pretrained = gr.Checkbox(
                        False,
                        label="사전학습 가중치 + top-5 / pretrained weights + top-5 (needs the network)",
                    )
                    run = gr.Button("측정 시작 / Run benchmark", variant="primary", elem_id="bench-run")
                with gr.Column(scale=1):
                    upload1, preview1, notice1, pixels1 = image_input(
                        "top-5 이미지 / image for top-5 (optional)"
                    )
            gr.Markdown(f"메모리 검사 / Memory check before allocating: {bench.FORMULA}")
            bench_msg = gr.Markdown(elem_id="bench-message")
            table = gr.Dataframe(
                headers=list(bench.COLUMNS), label="결과 / results", elem_id="bench-table", interactive=False
            )
            plot = gr.Plot(label="차트 / chart", show_label=False)
            csv = gr.File(label="CSV 다운로드 / download CSV", elem_id="bench-csv")
            predictions = gr.Markdown(elem_id="bench-predictions")
            upload1.upload(on_upload, upload1, [preview1, notice1, pixels1])
            run.click(
                on_benchmark,
                [models, img_size, batch, min_time, pretrained, pixels1, runtime],
                [bench_msg, table, plot, csv, predictions],
                concurrency_limit=1,
                concurrency_id="cpu",
            )

        with gr.Tab("② 코스 모델 / The course's models", elem_id="tab-course"):
            gr.Markdown(
                "과정에서 학습한 모델 / Models trained in this course (`make checkpoints`):\n"
                + course_notice()
            )
            with gr.Row():
                with gr.Column(scale=1):
                    upload2, preview2, notice2, pixels2 = image_input("이미지 업로드 / upload an image")
                    held = gr.State(None)
                    choices = course_models.example_keys()
                    example = gr.Dropdown(
                        choices=choices,
                        value=choices[0][1],
                        label="또는 예시 / or an example (ViT: plain shapes; DINO: textured shapes on camouflage; photos)",
                        elem_id="course-example",
                    )
                    load = gr.Button("예시 불러오기 / Load example", elem_id="course-load")
                with gr.Column(scale=2):
                    with gr.Row():
                        classify = gr.Button(
                            "ViT 분류 / Classify (ViT)", variant="primary", elem_id="vit-run"
                        )
                        dino = gr.Button(
                            "DINO 어텐션 / DINO attention", variant="primary", elem_id="dino-run"
                        )
                    vit_msg = gr.Markdown(elem_id="vit-message")
                    probs = gr.Label(
                        num_top_classes=6, label="ViT 클래스 확률 / class probabilities", elem_id="vit-probs"
                    )
                    vit_plot = gr.Plot(label="ViT 어텐션 / attention per head and rollout", show_label=False)
                    dino_msg = gr.Markdown(elem_id="dino-message")
                    dino_plot = gr.Plot(
                        label="DINO 어텐션과 마스크 / attention heads and masks", show_label=False
                    )
            upload2.upload(on_course_upload, upload2, [preview2, notice2, pixels2, held])
            load.click(on_example, example, [upload2, preview2, notice2, pixels2, held])
            classify.click(on_classify, pixels2, [probs, vit_plot, vit_msg], concurrency_id="cpu")
            dino.click(on_dino, [pixels2, held], [dino_plot, dino_msg], concurrency_id="cpu")

        with gr.Tab("③ 멀티모달 API / Multimodal APIs", elem_id="tab-apis"):
            api_status = gr.Markdown(elem_id="api-status")
            with gr.Row():
                with gr.Column(scale=1):
                    upload3, preview3, notice3, pixels3 = image_input("이미지 업로드 / upload an image")
                with gr.Column(scale=2):
                    prompt = gr.Textbox(apis.DEFAULT_PROMPT, label="질문 / prompt", lines=2)
                    providers = gr.CheckboxGroup(
                        choices=[(p.label, p.key) for p in apis.PROVIDERS.values()],
                        value=list(apis.PROVIDERS),
                        label="API",
                    )
                    ask = gr.Button("보내기 / Send", variant="primary", elem_id="api-run")
                    answers = gr.Markdown(elem_id="api-answers")
            upload3.upload(on_upload, upload3, [preview3, notice3, pixels3])
            ask.click(on_ask, [pixels3, prompt, providers], answers)

        demo.load(network_notice, None, [net_status, pretrained])
        demo.load(api_notice, None, api_status)
    return demo


def launch(demo: gr.Blocks, host: str, port: int, **kwargs) -> None:
    demo.queue(default_concurrency_limit=1)
    demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        max_file_size=f"{MAX_FILE_MB}mb",
        theme=gr.themes.Default(),
        show_error=False,
        **kwargs,
    )
