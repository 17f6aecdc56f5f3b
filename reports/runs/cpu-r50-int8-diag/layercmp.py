"""per-tensor error of a Q/DQ model vs FP32 on ORT CPU. usage: layercmp.py fp32.onnx qdq.onnx [n_images]"""
import sys, numpy as np, onnx, onnxruntime as ort, yaml
sys.path.insert(0, '/tmp/r50diag')
from stages.lib import data
f32, qdq = sys.argv[1], sys.argv[2]; n = int(sys.argv[3]) if len(sys.argv) > 3 else 64
p = yaml.safe_load(open('/tmp/r50diag/params.yaml'))
test = data.load_split('/tmp/r50diag/data/prepared/test.npz')
idx = np.random.default_rng(1).permutation(len(test))[:n]
x = data.preprocess(test.images[idx], p['data']['mean'], p['data']['std'], p['model']['image_size'])
m32 = onnx.load(f32)
names = [o for nd in m32.graph.node if nd.op_type in ('Conv', 'Relu', 'Add', 'MaxPool', 'Gemm') for o in nd.output]
ops = {o: nd.op_type for nd in m32.graph.node for o in nd.output}
def run(path, names):
    m = onnx.load(path)
    have = {o.name for o in m.graph.output}
    for nm in names:
        if nm not in have: m.graph.output.append(onnx.ValueInfoProto(name=nm))
    o = ort.SessionOptions(); o.log_severity_level = 3
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(m.SerializeToString(), o, providers=['CPUExecutionProvider'])
    outs = s.run(names, {s.get_inputs()[0].name: x})
    return dict(zip(names, outs))
a = run(f32, names); b = run(qdq, names)
for nm in names:
    r, q = a[nm].astype(np.float64), b[nm].astype(np.float64)
    rel = np.linalg.norm(q - r) / (np.linalg.norm(r) + 1e-12)
    cos = (q * r).sum() / (np.linalg.norm(q) * np.linalg.norm(r) + 1e-12)
    print(f"{ops[nm]:8s} {nm[:60]:60s} rel_err {rel:8.4f} cos {cos:7.4f} amax {np.abs(r).max():9.3f} rms {np.sqrt((r**2).mean()):8.4f}")
