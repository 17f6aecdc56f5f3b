"""remove selected Q/DQ pairs from a Q/DQ model. usage: bypass.py in.onnx out.onnx MODE [regex]
MODE: weights (drop weight QDQ) | acts (drop activation QDQ) | skip (drop *_skip_ QDQ) | keep-only REGEX (drop all act QDQ except tensors matching) | drop REGEX"""
import sys, re, onnx
src, dst, mode = sys.argv[1:4]; rx = re.compile(sys.argv[4]) if len(sys.argv) > 4 else None
m = onnx.load(src); g = m.graph
inits = {t.name for t in g.initializer}
prod = {o: n for n in g.node for o in n.output}
drop = []
for dq in [n for n in g.node if n.op_type == 'DequantizeLinear']:
    q = prod.get(dq.input[0])
    if q is None or q.op_type != 'QuantizeLinear':
        continue  # weight stored quantized? not in this pipeline (AddQDQPairToWeight)
    src_t = q.input[0]
    is_w = src_t in inits
    is_skip = '_skip_' in dq.name or dq.output[0].endswith('_skip_dq')
    sel = {'weights': is_w, 'acts': not is_w, 'skip': is_skip,
           'keep-only': (not is_w) and not (rx and rx.search(src_t)),
           'drop': (not is_w) and bool(rx and rx.search(src_t))}[mode]
    if sel:
        drop.append((q, dq, src_t))
for q, dq, src_t in drop:
    for n in g.node:
        for i, t in enumerate(n.input):
            if t == dq.output[0]:
                n.input[i] = src_t
dead = {id(x) for q, dq, _ in drop for x in (q, dq)}
keep = [n for n in g.node if id(n) not in dead]
del g.node[:]; g.node.extend(keep)
onnx.save(m, dst); print(f"dropped {len(drop)} Q/DQ pairs")
