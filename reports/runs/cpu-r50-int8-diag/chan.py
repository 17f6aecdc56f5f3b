"""per-channel ranges of residual-stream tensors (FP32) and fraction of values that quantize to 0 under the calibrated per-tensor scale"""
import sys, pickle, numpy as np, onnx, onnxruntime as ort, yaml
sys.path.insert(0, '/tmp/r50diag')
from stages.lib import data
f32, rng = sys.argv[1], pickle.load(open(sys.argv[2], 'rb'))
pat = sys.argv[3] if len(sys.argv) > 3 else 'relu_2'
p = yaml.safe_load(open('/tmp/r50diag/params.yaml'))
test = data.load_split('/tmp/r50diag/data/prepared/test.npz')
idx = np.random.default_rng(1).permutation(len(test))[:200]
x = data.preprocess(test.images[idx], p['data']['mean'], p['data']['std'], p['model']['image_size'])
m = onnx.load(f32)
names = [o for nd in m.graph.node if nd.op_type in ('Relu', 'MaxPool', 'Add') for o in nd.output if pat in o]
names += [o for nd in m.graph.node if nd.op_type == 'Add' for o in nd.output if o not in names]
for nm in names: m.graph.output.append(onnx.ValueInfoProto(name=nm))
s = ort.InferenceSession(m.SerializeToString(), providers=['CPUExecutionProvider'])
outs = dict(zip(names, s.run(names, {'input': x})))
for nm in names:
    a = outs[nm]; amax_t = float(np.asarray(rng.data[nm].range_value[1]).reshape(-1)[0]) if nm in rng.data else float('nan')
    ch = np.abs(a).max(axis=(0, 2, 3)); chrms = np.sqrt((a**2).mean(axis=(0, 2, 3)))
    step = amax_t / 127
    zero = (np.abs(a) < step / 2).mean(); nz = (np.abs(a) > 0).mean()
    print(f"{nm[-40:]:40s} calib_amax {amax_t:7.1f} step {step:6.3f} | ch amax p50 {np.median(ch):6.2f} p90 {np.percentile(ch,90):6.2f} max {ch.max():7.1f} | ch rms p50 {np.median(chrms):6.3f} | nonzero {nz:.2f} -> q0 {zero:.2f} | top ch {np.argsort(ch)[-3:]}")
