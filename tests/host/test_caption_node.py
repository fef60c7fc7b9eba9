"""FineXtractCaptionInverter in a real ComfyUI over HTTP: ranking and PEZ through the loaded CLIP-L,
LoRA and full pairs, metadata from a real kohya-style LoRA file, and the no-change refusal.

Models: the harness's random-weight SD1.5-architecture files (real CLIP-L shapes, 49 408 tokens);
their "fine-tunes" are random, so these tests check plumbing and honesty, not recovery quality
(that is measured on the miniature world, see caption's bench)."""
import json

from safetensors.torch import load_file, save_file


def graph(models, method="ranking", iterations=4, loras=(), finetuned="none", length=3):
    inputs = {"base_checkpoint": models.checkpoints["base"], "finetuned_checkpoint": finetuned}
    for i in range(1, 4):
        name = loras[i - 1] if i <= len(loras) else "none"
        inputs[f"lora_{i}"], inputs[f"strength_{i}"] = name, 1.0
    return {
        "L": {"class_type": "FineXtractDualModelLoader", "inputs": inputs},
        "C": {"class_type": "FineXtractCaptionInverter", "inputs": {
            "base_model": ["L", 0], "finetuned_model": ["L", 1], "clip": ["L", 2],
            "method": method, "length": length, "iterations": iterations, "seed": 0, "objective": "eq19",
            "optimiser": "pgd", "lr": 0.1, "vocabulary": "raw", "rows": "sequence",
            "deflate": 0}},
        "R0": {"class_type": "PreviewAny", "inputs": {"source": ["C", 0]}},
        "R1": {"class_type": "PreviewAny", "inputs": {"source": ["C", 1]}},
        "R2": {"class_type": "PreviewAny", "inputs": {"source": ["C", 2]}},
    }


def texts(outputs):
    return [outputs[f"R{i}"]["text"][0] for i in range(3)]


def test_schema_declares_inputs_with_tooltips(comfy):
    info = comfy.object_info("FineXtractCaptionInverter")["FineXtractCaptionInverter"]
    assert info["category"] == "finextract" and info["description"]
    required = info["input"]["required"]
    assert {"base_model", "finetuned_model", "clip", "method", "length", "iterations", "seed"} <= set(required)
    assert all(spec[1].get("tooltip") for spec in required.values() if len(spec) > 1)
    assert info["output_name"] == ["caption", "ranked_tokens", "source"]


def test_ranking_on_lora_pair(comfy, comfy_models):
    caption, ranked, source = texts(comfy.run(graph(comfy_models, loras=[comfy_models.loras["kohya"]])))
    assert len(ranked.splitlines()) == 20
    top3 = [line.split("\t")[0] for line in ranked.splitlines()[:3]]
    assert caption == " ".join(top3)
    assert "3 of 14 cross-attention K/V layers changed" in source  # the test LoRA touches to_k, to_v, to_k
    assert "raw token embeddings" in source and "weight-space ranking" in source


def test_pez_through_loaded_clip_on_full_pair(comfy, comfy_models):
    caption, _, source = texts(comfy.run(graph(comfy_models, method="pez", iterations=3,
                                               finetuned=comfy_models.checkpoints["finetuned"])))
    assert caption and "hard-prompt extraction (Algorithm 1, pgd, eq19 over sequence rows)" in source
    assert "PEZ: 3 iterations" in source and "14 of 14" in source


def _write_lora(comfy, comfy_models, name, keep=lambda key: True, metadata=None):
    """A LoRA file in the server's own loras folder, made of (some of) the kohya test LoRA's tensors."""
    lora = load_file(str(comfy_models.root / "loras" / comfy_models.loras["kohya"]))
    folder = comfy.base_dir / "models" / "loras"
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in lora.items() if keep(k)}, str(folder / name), metadata=metadata)
    return name


def test_unchanged_text_layers_are_refused(comfy, comfy_models):
    """A LoRA on self-attention only leaves the K/V layers alone: refused, with what did change."""
    name = _write_lora(comfy, comfy_models, "fx-attn1-only.safetensors", keep=lambda key: "attn1" in key)
    error = comfy.run_expect_error(graph(comfy_models, loras=[name]))
    assert "did not change" in error and "reveal no caption" in error and "1 other attention" in error


def test_metadata_caption_from_kohya_lora(comfy, comfy_models):
    """A LoRA carrying kohya training metadata: auto takes the caption from it and says so."""
    _write_lora(comfy, comfy_models, "fx-caption-meta.safetensors", metadata={
        "ss_tag_frequency": json.dumps({"5_mau cat": {"mau cat": 5, "sitting": 2}}),
        "ss_dataset_dirs": json.dumps({"5_mau cat": {"n_repeats": 5, "img_count": 5}}),
        "ss_num_train_images": "25", "ss_output_name": "mau"})
    caption, ranked, source = texts(comfy.run(graph(comfy_models, method="auto",
                                                    loras=["fx-caption-meta.safetensors"])))
    assert caption == "mau cat"
    assert source.startswith("caption from: training metadata")
    assert "N0 is their sum" in source and "{'5_mau cat': 5}" in source and "[from ss_tag_frequency]" in source
    assert len(ranked.splitlines()) == 20  # the weights were ranked too, as a cross-check


def test_pez_stops_on_interrupt(comfy, comfy_models):
    """A 100 000-iteration PEZ run stops on /interrupt with ComfyUI's own interruption (the node
    checks it every iteration), not an error of ours."""
    import time

    prompt_id = comfy.submit(graph(comfy_models, method="pez", iterations=100000, loras=[comfy_models.loras["peft"]]))
    deadline = time.monotonic() + 120
    while not comfy.get_json("/queue")["queue_running"] and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(3)
    comfy.interrupt()
    assert comfy.error_of(comfy.wait(prompt_id, timeout=120)) == "interrupted"
