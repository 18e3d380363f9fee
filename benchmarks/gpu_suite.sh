#!/usr/bin/env bash
# Every GPU figure of the benchmarks, and the CUDA tests, in one run sized for a short lease of one GPU machine.
#
#   bash benchmarks/gpu_suite.sh wheels         # here (PyPI reachable): the wheels the GPU image lacks, into .whl/
#   bash benchmarks/gpu_suite.sh run OUTDIR     # on the GPU machine, from the repository root, with .whl/ beside it
#   bash benchmarks/gpu_suite.sh check OUTDIR   # on any CPU: the same steps on tiny sizes, to check this script
#
# `run` installs the carried wheels into /tmp/site (the image's torch stays), then runs each step under its own
# time limit and goes on when one fails or times out, so that a partial run still brings its figures back:
#   tests      the CUDA tests (`-k cuda`: open_clip parity on the GPU, fp16/bf16 fused inference, the fast image
#              processor's pixels, the training batch's normalisation)
#   latency    benchmarks.latency, fp16 then bf16: S0, S2, B and their open_clip / Apple references, batch 1 and 256,
#              eager and torch.compile with CUDA graphs (`--compile`, mode reduce-overhead)
#   train      benchmarks.train_throughput: S0, S2, B at batch 256, bf16, the three recipes (online distillation
#              with two ViT-L/14 teachers), samples/s and peak memory
#   reinforce  benchmarks.reinforce_throughput: DataCompDR-12M's recipe per stage and end to end (two ViT-L/14
#              teachers, K=30, N=5 CoCa ViT-L/14 captions) on 256 images
# Results: OUTDIR/gpu_results.tar.gz (every JSON and markdown table) and OUTDIR/suite.log. STEPS="latency train"
# runs a subset; each step's limit is its *_S variable below (seconds; latency's is per precision, train's per
# student).
set -uo pipefail
cd "$(dirname "$0")/.."

mode=${1:-}
out=${2:-}
STEPS=${STEPS:-tests latency train reinforce}
# Limits of `run` add up to 9 minutes, which leaves room in a 15-minute lease for the machine's start and a rerun
# of one step; `check` is on a CPU, where torch.compile alone takes a minute or two. The first student's training
# step also builds the training data (1,792 DataCompDR-shaped rows), which the other two reuse.
if [[ $mode == check ]]; then default_s=600; fi
TESTS_S=${TESTS_S:-${default_s:-50}} LATENCY_S=${LATENCY_S:-${default_s:-100}} TRAIN_S=${TRAIN_S:-${default_s:-75}}
REINFORCE_S=${REINFORCE_S:-${default_s:-60}}

if [[ $mode == wheels ]]; then
    # The GPU image has torch, timm, accelerate, safetensors, onnx(runtime), pyarrow; these it lacks or has too old
    # for setup.py's ranges. Pure-Python wheels except xxhash, none of them a torch build.
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
        transformers==5.24.0 huggingface_hub==2.4.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 \
        xxhash==4.1.0 evaluate==0.4.6 ftfy==6.3.1 wcwidth==0.7.0 open_clip_torch==3.3.0 timm==1.0.31 \
        visaionmobileclip
    exit
fi
if [[ $mode != run && $mode != check ]] || [[ -z $out ]]; then
    echo "usage: bash benchmarks/gpu_suite.sh wheels | run OUTDIR | check OUTDIR" >&2
    exit 2
fi

mkdir -p "$out"
results=$(mktemp -d) scratch=$(mktemp -d)
trap 'rm -rf "$results" "$scratch"' EXIT
train_data=$scratch/data  # shared by the students' training steps
log="$out/suite.log"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if [[ $mode == run ]]; then
    if ! ls .whl/*.whl >/dev/null 2>&1; then
        echo "no wheels in .whl/: run 'bash benchmarks/gpu_suite.sh wheels' here first and carry .whl" >&2
        exit 2
    fi
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
    device=cuda
    nvidia-smi >>"$log" 2>&1
else
    device=cpu
fi
failed=()

step() {  # step NAME LIMIT_S COMMAND...: one command, its output in the log, its failure noted
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit} s): $*" | tee -a "$log"
    local start=$SECONDS
    timeout --signal=INT --kill-after=20 "$limit" "$@" >>"$log" 2>&1
    local rc=$?
    echo "== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$log"
    ((rc == 0)) || failed+=("$name")
}

python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
    >>"$log" 2>&1

for s in $STEPS; do
    case $s in
    tests)
        step tests "$TESTS_S" python3 -m pytest -q -rs -p no:cacheprovider -k cuda tests/test_cuda.py \
            tests/test_image_processing_fast.py tests/test_data_pipeline.py
        ;;
    latency)
        for dtype in fp16 bf16; do
            if [[ $mode == run ]]; then
                step "latency $dtype" "$LATENCY_S" python3 -m benchmarks.latency --device cuda --dtype "$dtype" \
                    --variants mobileclip-s0 mobileclip-s2 mobileclip-b --batch-sizes 1 256 --rounds 20 \
                    --batched-rounds 5 --compile --output "$results/latency_cuda_$dtype.json"
            else
                step "latency $dtype" "$LATENCY_S" python3 -m benchmarks.latency --smoke --no-onnx --dtype "$dtype" \
                    --compile --output "$results/latency_cpu_smoke_$dtype.json"
            fi
        done
        ;;
    train)
        for student in mobileclip-s0 mobileclip-s2 mobileclip-b; do
            if [[ $mode == run ]]; then
                size=(--batch-size 256 --mixed-precision bf16 --teacher mobileclip-l14 --num-workers 12
                    --warmup 2 --steps 4)
            else
                size=(--batch-size 2 --teacher mobileclip-s0 --num-workers 0 --warmup 1 --steps 1 --k 2 --n 1)
                [[ $student == mobileclip-s0 ]] || continue  # one student checks the command
            fi
            step "train $student" "$TRAIN_S" python3 -m benchmarks.train_throughput --device "$device" \
                --student "$student" "${size[@]}" --data-rounds 0 --data-dir "$train_data" \
                --out "$results/train_${device}_$student.json"
        done
        ;;
    reinforce)
        if [[ $mode == run ]]; then
            size=(--num-images 256 --batch-size 64 --repeats 1)
        else
            size=(--num-images 2 --k 2 --n 1 --repeats 1 --num-workers 0 --teachers openclip:MobileCLIP-S1:
                openclip:MobileCLIP-S1: --captioner openclip:coca_ViT-B-32:)
        fi
        step reinforce "$REINFORCE_S" python3 -m benchmarks.reinforce_throughput --device "$device" "${size[@]}" \
            --out "$results/reinforce_$device.json"
        ;;
    *)
        echo "unknown step '$s' (tests, latency, train, reinforce)" | tee -a "$log"
        failed+=("$s")
        ;;
    esac
done

tar -czf "$out/gpu_results.tar.gz" -C "$results" .
echo "results: $(tar -tzf "$out/gpu_results.tar.gz" | grep -c -v '/$') files in $out/gpu_results.tar.gz; log $log"
if ((${#failed[@]})); then
    echo "failed or timed out: ${failed[*]}" | tee -a "$log"
    exit 1
fi
