"""benchmarks/gpu_check.py runs end to end on a CPU (--small) with nothing heavier than PyTorch on its path."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("prefect", "open_clip", "faiss", "transformers", "tasks", "flows")

# Run the script as __main__ in a fresh interpreter, then list the heavy modules that got imported.
PROBE = """
import runpy, sys, json
sys.argv = ['gpu_check.py', '--device', 'cpu', '--small', '--out', sys.argv[1]]
runpy.run_path({script!r}, run_name='__main__')
print('HEAVY=' + json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def test_gpu_check_small_on_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    code = PROBE.format(script=str(ROOT / "benchmarks" / "gpu_check.py"), heavy=HEAVY)
    proc = subprocess.run([sys.executable, "-c", code, str(out)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    heavy = json.loads(proc.stdout.rsplit("HEAVY=", 1)[1])
    assert heavy == [], f"gpu_check imports {heavy}: a bare GPU node would need them"
    report = json.loads(out.read_text())
    assert report["small"] and report["machine"]["device"] == "cpu"
    assert report["train"]["iters"] == 3 and report["train"]["it_per_s"] > 0 and report["train"]["peak_gib"] is None
    assert report["infer"]["size"] == "512x270" and report["infer"]["tiles"] > 1 and report["infer"]["seconds"] > 0
    assert report["moe"]["layer_ratio_8_vs_2"] > 0 and report["moe"]["model_ratio_8_vs_2"] > 0
    assert "| train it/s" in proc.stdout
