#!/usr/bin/env node
// The ONNX Runtime anchor of faprompt-bench: the vision encoder exported by
// export_onnx.py (f32, or its int8 rewrite) run by ONNX Runtime's CPU
// provider through npm's onnxruntime-node (the binding over the same
// libonnxruntime.so as its C API and Python package), as users who ship CLIP
// detectors deploy it. Dev-only: tools/setup-onnxruntime.sh installs it.
//
//   node ort_speed.js --serve --ort-dir DIR --ref PREFIX.ref.json --onnx FILE --threads T
//
// Speaks authors_speed.py --serve's protocol (tools/torch_ref.c): one JSON
// ready line, then stdin "run N" -> one JSON line of N frames' times; "quit".
// Session: intraOpNumThreads T, interOpNumThreads 1, graph optimisation
// "all" (ORT_ENABLE_ALL: constant folding, LayerNorm / GELU / MatMul+Add
// fusions, the int8 fusions), sequential execution, the CPU memory arena
// and memory patterns on (the defaults), intra-op threads spinning as by
// default. Timed: session.run on the pre-processed frame, outputs copied out.
// The ready line also gives the outputs' largest absolute difference from
// PyTorch fp32 (the authors' module structure) on export_onnx.py's reference
// input, computed once at start.
'use strict';
const fs = require('fs');
const path = require('path');

function parseArgs(argv) {
  const a = {threads: 1};
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    if (k === '--serve') continue;
    if (!k.startsWith('--') || i + 1 >= argv.length) throw new Error(`bad argument ${k}`);
    a[k.slice(2).replace(/-([a-z])/g, (_, c) => c.toUpperCase())] = argv[++i];
  }
  for (const k of ['ortDir', 'ref', 'onnx'])
    if (!a[k]) throw new Error(`--${k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())} is required`);
  a.threads = parseInt(a.threads, 10);
  return a;
}

function readF32(file, shape) {
  const buf = fs.readFileSync(file);
  const n = shape.reduce((x, y) => x * y, 1);
  if (buf.length !== 4 * n) throw new Error(`${file}: ${buf.length} bytes, expected ${4 * n}`);
  // copy into an aligned Float32Array (little-endian hosts)
  const out = new Float32Array(n);
  new Uint8Array(out.buffer).set(buf);
  return out;
}

// over the patch tokens (T's row 0 is never read: skipRow0 for "tokens",
// rows are the second-to-last dimension) and g
function maxAbsDiff(a, b, shape, skipRow0) {
  const width = shape[shape.length - 1], rows = shape.length > 1 ? shape[shape.length - 2] : 1;
  let m = 0;
  for (let i = 0; i < a.length; i++)
    if (!skipRow0 || Math.floor(i / width) % rows !== 0) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const modDir = path.join(args.ortDir, 'node_modules', 'onnxruntime-node');
  const ort = require(modDir);
  const version = require(path.join(modDir, 'package.json')).version;
  const ref = JSON.parse(fs.readFileSync(args.ref, 'utf8'));
  const dir = path.dirname(args.ref), base = path.basename(args.ref, '.ref.json');
  const tensors = Object.fromEntries(ref.tensors.map((t) => [t.name, t]));
  const input = ref.input;
  const data = {};
  for (const t of ref.tensors) data[t.name] = readF32(path.join(dir, `${base}.${t.name}.f32`), t.shape);

  const t0 = process.hrtime.bigint();
  const session = await ort.InferenceSession.create(args.onnx, {
    executionProviders: ['cpu'],
    intraOpNumThreads: args.threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
  });
  const loadS = Number(process.hrtime.bigint() - t0) / 1e9;
  const feeds = {[input]: new ort.Tensor('float32', data[input], tensors[input].shape)};

  // the error against PyTorch fp32, once; it is also the warm-up run
  const first = await session.run(feeds);
  let err = 0, refMax = 0;
  for (const name of ref.outputs) {
    err = Math.max(err, maxAbsDiff(first[name].data, data[name], tensors[name].shape,
                                   name === 'tokens'));
    refMax = Math.max(refMax, tensors[name].max_abs);
  }
  process.stdout.write(JSON.stringify({
    ready: true, anchor: `onnxruntime-node ${version}`, onnxruntime: version,
    threads: args.threads, load_s: loadS, onnx: path.basename(args.onnx),
    max_abs_err: err, ref_max_abs: refMax,
  }) + '\n');

  const lines = require('readline').createInterface({input: process.stdin});
  for await (const line of lines) {
    const cmd = line.trim().split(/\s+/);
    if (!cmd[0] || cmd[0] === 'quit') break;
    const n = cmd.length > 1 ? parseInt(cmd[1], 10) : 1;
    const frames = [];
    for (let i = 0; i < n; i++) {
      const f0 = process.resourceUsage().minorPageFault;
      const s0 = process.hrtime.bigint();
      const out = await session.run(feeds);
      for (const name of ref.outputs) out[name].data;  // what the scoring would read
      const s = Number(process.hrtime.bigint() - s0) / 1e9;
      frames.push({frame_s: s, vision_s: s, text_s: 0,
                   minflt: process.resourceUsage().minorPageFault - f0});
    }
    process.stdout.write(JSON.stringify({frames}) + '\n');
  }
  await session.release();
}

main().catch((e) => {
  process.stderr.write(`ort_speed.js: ${e.stack || e}\n`);
  process.exit(1);
});
