"""calibrate variants with the pipeline's own functions.
usage: calq.py fp32.onnx out.onnx --method minmax --n 256 [--noskip] [--ranges-from ranges.pkl] [--save-ranges r.pkl]"""
import sys, argparse, pickle, dataclasses, json, numpy as np, logging
sys.path.insert(0, '/tmp/r50diag')
from pathlib import Path
from stages import calibrate as C
from stages.lib import data
from stages.lib.params import load_params
ap = argparse.ArgumentParser()
ap.add_argument('onnx'); ap.add_argument('out')
ap.add_argument('--method', default='minmax'); ap.add_argument('--n', type=int, default=256)
ap.add_argument('--percentile', type=float, default=99.99)
ap.add_argument('--noskip', action='store_true'); ap.add_argument('--pertensor', action='store_true')
ap.add_argument('--ranges-from'); ap.add_argument('--save-ranges')
a = ap.parse_args()
p = load_params('/tmp/r50diag/params.yaml')
c = dataclasses.replace(p.calibrate, method=a.method, num_images=a.n, percentile=a.percentile, per_channel=not a.pertensor)
p = dataclasses.replace(p, calibrate=c)
if a.ranges_from:
    tensors = pickle.load(open(a.ranges_from, 'rb'))
else:
    calib = data.load_split('/tmp/r50diag/data/prepared/calib.npz')
    tensors = C.compute_ranges(Path(a.onnx), C.calibration_batches(p, calib), c, ['CPUExecutionProvider'])
    if a.save_ranges: pickle.dump(tensors, open(a.save_ranges, 'wb'))
if a.noskip:
    C.quantize_skip_inputs = lambda model, tensors: 0
print(C.quantize(Path(a.onnx), tensors, c, Path(a.out)))
