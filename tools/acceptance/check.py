#!/usr/bin/env python3
"""Run spp on the acceptance models made by make_models.py and compare with onnxruntime.

    python tools/acceptance/check.py /tmp/spp-accept --spp-run .build/release/spp-run --spp .build/release/spp

For every model: `spp convert model.onnx -o model.spp` once; then for every input set both
`spp-run model.onnx --input NAME=FILE.npy ... --output-dir OUT` and the same with model.spp.
spp-run writes each graph output to OUT/<output name>.npy. A run passes when every output has the
expected shape and max |spp - onnxruntime| <= threshold (absolute; padded positions count
unless --valid-only). Prints model x set x format
with the max abs error (and wall time), then `N passed, M failed`; exits 1 if any failed.
Needs only numpy.
"""
import argparse, json, shlex, subprocess, sys, tempfile, time
from pathlib import Path

import numpy as np


def run(cmd, timeout):
    try:
        p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"timeout after {timeout}s"
    except OSError as e:
        return f"cannot run: {e}"
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        print(f"$ {' '.join(map(str, cmd))}\n  exit {p.returncode}: " + "\n  ".join(tail), file=sys.stderr)
        return f"exit {p.returncode}"
    return None


def compare(out_dir, set_dir, outputs, valid_only):
    """Max abs error over all outputs, or a failure reason (str)."""
    worst = 0.0
    mask_file = set_dir / "input_attention_mask.npy"
    mask = np.load(mask_file).astype(bool) if valid_only and mask_file.exists() else None
    for name in outputs:
        f = out_dir / f"{name}.npy"
        if not f.exists():
            return f"no {name}.npy"
        got, want = np.load(f), np.load(set_dir / f"expected_{name}.npy")
        if got.shape != want.shape:
            return f"{name} shape {list(got.shape)} != {list(want.shape)}"
        if not np.isfinite(got.astype(np.float64)).all():
            return f"{name} has NaN/inf"
        if mask is not None and got.shape[:2] == mask.shape:  # [batch, seq, ...]: real tokens only
            got, want = got[mask], want[mask]
        worst = max(worst, float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max(initial=0.0)))
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=Path, help="directory written by make_models.py")
    ap.add_argument("--spp-run", required=True, type=Path)
    ap.add_argument("--spp", required=True, type=Path)
    ap.add_argument("--threshold", type=float, default=1e-4, help="max abs error allowed (default 1e-4)")
    ap.add_argument("--only", nargs="+", help="model names to check (default: all in manifest.json)")
    ap.add_argument("--formats", nargs="+", default=["onnx", "spp"], choices=["onnx", "spp"])
    ap.add_argument("--valid-only", action="store_true",
                    help="ignore padded positions (attention_mask 0) of [batch, seq, ...] outputs; by default "
                         "they count, as ONNX defines their values too")
    ap.add_argument("--spp-run-args", default="", help='extra spp-run arguments, e.g. "--threads 1"')
    ap.add_argument("--timeout", type=float, default=900, help="seconds per spp / spp-run call")
    a = ap.parse_args()

    manifest = json.loads((a.dir / "manifest.json").read_text())
    rows, passed, failed = [], 0, 0
    for model, m in manifest.items():
        if a.only and model not in a.only:
            continue
        onnx_path = a.dir / model / m["model"]
        paths = {"onnx": onnx_path, "spp": onnx_path.with_suffix(".spp")}
        convert_error = None
        if "spp" in a.formats:
            paths["spp"].unlink(missing_ok=True)
            convert_error = run([a.spp, "convert", onnx_path, "-o", paths["spp"]], a.timeout)
            convert_error = convert_error and f"convert: {convert_error}"
        for set_name in m["sets"]:
            set_dir = a.dir / model / set_name
            inputs = [x for n in m["inputs"] for x in ("--input", f"{n}={set_dir / f'input_{n}.npy'}")]
            cells = []
            for fmt in a.formats:
                if fmt == "spp" and convert_error:
                    result, secs = convert_error, 0.0
                else:
                    with tempfile.TemporaryDirectory() as out:
                        t0 = time.perf_counter()
                        cmd = [a.spp_run, paths[fmt], *inputs, "--output-dir", out, *shlex.split(a.spp_run_args)]
                        result = run(cmd, a.timeout)
                        secs = time.perf_counter() - t0
                        result = result or compare(Path(out), set_dir, m["outputs"], a.valid_only)
                ok = not isinstance(result, str) and result <= a.threshold
                passed, failed = passed + ok, failed + (not ok)
                text = result if isinstance(result, str) else f"{result:.2e}"
                cells.append(f"{'ok  ' if ok else 'FAIL'} {text} ({secs:.2f}s)")
            rows.append([model, set_name, *cells])
            print("  ".join(rows[-1]), file=sys.stderr, flush=True)  # progress

    head = ["model", "set", *a.formats]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    print(f"threshold: max abs error <= {a.threshold:g}")
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
