#!/usr/bin/env python3
"""Check `spp export` against spp itself: onnxruntime on the exported ONNX vs `spp-run` on the .spp.

    python tools/acceptance/check_export.py MODEL.spp --keep 1.0 0.5 \
        [--input input_ids=ids.npy ...] [--batch 2 --seq 32] [--threshold 1e-4]

For every keep R: `spp export MODEL.spp --keep R -o DIR/keep-R.onnx`; the file must pass
onnx.checker (full check) and use only default-domain operators of opset 17. Then the same inputs
go to onnxruntime (CPU, all graph optimisations) and to `spp-run MODEL.spp --keep R --weights fp32`
(the export holds float32 values, also of an int8 file: an int8 run would differ by its activation
quantization, ~0.1 on all-MiniLM-L6-v2), and every output is compared: prints the max abs error per keep and exits 1 when one exceeds the threshold.

Inputs are the given .npy files, or synthetic ones: token ids drawn uniformly below the
vocabulary size (the rows of the embedding the ids index), an attention mask with the last
quarter of every other row padded, zero token type ids. Needs onnx, onnxruntime and numpy
(a development check; `swift test` never runs it).
"""
import argparse, subprocess, sys, tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort


def run(cmd):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"$ {' '.join(map(str, cmd))}\nexit {p.returncode}: {p.stderr.strip() or p.stdout.strip()}")
    return p.stdout


def check_standard(model):
    onnx.checker.check_model(model, full_check=True)
    opsets = {o.domain: o.version for o in model.opset_import}
    assert opsets == {"": 17}, f"opset imports {opsets}, expected only the default domain at 17"
    foreign = [n.op_type for n in model.graph.node if n.domain not in ("", "ai.onnx")]
    assert not foreign, f"non-standard ops: {sorted(set(foreign))}"


def synthetic_inputs(model, batch, seq, rng):
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    inputs = {}
    for vi in model.graph.input:
        elem = vi.type.tensor_type.elem_type
        shape = [d.dim_value if d.HasField("dim_value") else (batch if k == 0 else seq)
                 for k, d in enumerate(vi.type.tensor_type.shape.dim)]
        if elem != onnx.TensorProto.INT64:
            inputs[vi.name] = rng.uniform(-1, 1, size=shape).astype(np.float32)
        elif vi.name == "attention_mask":
            mask = np.ones(shape, np.int64)
            mask[1::2, shape[1] - shape[1] // 4:] = 0
            inputs[vi.name] = mask
        elif vi.name in ("token_type_ids", "position_ids"):
            inputs[vi.name] = np.zeros(shape, np.int64)
        else:
            # The vocabulary: rows of the table a Gather indexes with this input (or, when the ids are
            # reshaped first, the smallest table any Gather indexes).
            tables = [n for n in model.graph.node if n.op_type == "Gather" and n.input[0] in inits and len(inits[n.input[0]]) == 2]
            vocab = min((inits[n.input[0]][0] for n in tables if n.input[1] == vi.name),
                        default=min((inits[n.input[0]][0] for n in tables), default=1000))
            inputs[vi.name] = rng.integers(0, vocab, size=shape, dtype=np.int64)
    return inputs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, help="a .spp file")
    ap.add_argument("--keep", type=float, nargs="+", default=[1.0])
    ap.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--threshold", type=float, default=1e-4, help="max abs error allowed (default 1e-4)")
    ap.add_argument("--spp", type=Path, default=Path(".build/release/spp"))
    ap.add_argument("--spp-run", type=Path, default=Path(".build/release/spp-run"))
    args = ap.parse_args()

    failed = False
    with tempfile.TemporaryDirectory(prefix="spp-check-export-") as tmp:
        tmp = Path(tmp)
        for keep in args.keep:
            onnx_path = tmp / f"keep-{keep}.onnx"
            print(run([args.spp, "export", args.model, "--keep", keep, "-o", onnx_path]).rstrip())
            model = onnx.load(str(onnx_path))
            check_standard(model)
            if args.input:
                inputs = {s.split("=", 1)[0]: np.load(s.split("=", 1)[1]) for s in args.input}
            else:
                inputs = synthetic_inputs(model, args.batch, args.seq, np.random.default_rng(0))
            in_dir, out_dir = tmp / f"in-{keep}", tmp / f"out-{keep}"
            in_dir.mkdir()
            for name, a in inputs.items():
                np.save(in_dir / f"{name}.npy", a)
            run([args.spp_run, args.model, "--keep", keep, "--weights", "fp32", "--output-dir", out_dir]
                + [x for name in inputs for x in ("--input", f"{name}={in_dir / (name + '.npy')}")])
            session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
            names = [o.name for o in session.get_outputs()]
            worst = 0.0
            for name, got in zip(names, session.run(names, inputs)):
                want = np.load(out_dir / f"{name}.npy")
                if got.shape != want.shape:
                    sys.exit(f"keep {keep}: output {name} has shape {got.shape} in onnxruntime, {want.shape} in spp")
                err = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max(initial=0.0))
                print(f"  keep {keep}: {name} {list(got.shape)} max abs error {err:.3g}")
                worst = max(worst, err)
            ok = np.isfinite(worst) and worst <= args.threshold
            failed |= not ok
            print(f"keep {keep}: max abs error {worst:.3g} {'ok' if ok else 'FAILED'} (threshold {args.threshold:g})")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
