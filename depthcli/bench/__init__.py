"""`depthcli bench`: per-stage and end-to-end speed, memory and compute efficiency, beside the
transformers `depth-estimation` pipeline run on the same weights, images and device.

What is measured, per run over the same N images (median over runs, spread = (max-min)/median):
- stages, one image at a time in this thread: decode, preprocess, model (device-synchronised),
  postprocess (resize to the photo's size, copy to host), write (the default colour PNG);
- end-to-end: the real `depthcli predict` path (`run_predict` on a folder: decode threads,
  shape-bucketed batches, writer threads), images/s;
- model compute: FLOPs counted once per input shape with FlopCounterMode, achieved GFLOP/s beside
  the peak of a large torch.matmul measured in the same process, same device and precision;
- memory: peak host RSS (VmHWM, reset before each phase on Linux) and, on CUDA, peak device memory;
- the peer: transformers' DepthAnythingForDepthEstimation built from a config and loaded with the
  same weights (converted to its layout), behind `pipeline("depth-estimation")` with a
  DPTImageProcessor configured like the hub's -hf checkpoints; nothing is downloaded.

Weights default to the synthetic recipe of ../shared/golden/README.md built in memory, so the
command runs offline; speed does not depend on the values.

Modules: `run` (orchestration), `passes` (stage and end-to-end passes, inputs), `measure`
(timing, memory, FLOPs, matmul peak), `peer` (the transformers pipeline), `report` (text),
`memory` (peak RSS of a video run vs its length). The click command is `depthcli.cli.bench`.
"""
